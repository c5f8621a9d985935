"""Layered configuration and site profiles, with blame.

Layers, later ones winning:

1. packaged ``site-configs/*.yaml`` (shipped with hpcqueue);
2. system ``/etc/hpcqueue/*.yaml`` (``$HPCQUEUE_SYSTEM_CONFIG_DIR``);
3. user ``~/.config/hpcqueue/*.yaml`` (``$XDG_CONFIG_HOME/hpcqueue``);
4. ``HPCQUEUE_*`` environment variables;
5. command-line flags.

A profile is ``SITE/NAME``; a plain ``NAME`` resolves in the active site, or
anywhere if it is unique; a bare ``SITE`` means that site's ``default`` (or
only) profile.  Every value remembers where it came from (``config show
--blame``).  Values flow one way: files -> environment -> flags -> the
queue's parameters, which are journaled as resolved, so a later edit of a
file never changes a running queue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hpcqueue.autoalloc.options import OPTIONS
from hpcqueue.config.schema import PROFILE_KEYS, SETTING_KEYS, Problem, parse
from hpcqueue.exceptions import HpcqueueError, UsageError

PACKAGED = Path(__file__).resolve().parent.parent / "site-configs"


class ConfigError(HpcqueueError):
    """A config file that does not validate."""


@dataclass
class Value:
    value: object
    source: str


@dataclass
class Profile:
    site: str
    name: str
    values: dict = field(default_factory=dict)  # key -> Value
    files: list = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.site}/{self.name}"


def layer_dirs(env=None) -> list[tuple[str, Path]]:
    env = os.environ if env is None else env
    system = Path(env.get("HPCQUEUE_SYSTEM_CONFIG_DIR") or "/etc/hpcqueue")
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"),
                                                     ".config")
    return [("packaged", PACKAGED), ("system", system), ("user", Path(xdg) / "hpcqueue")]


def env_key(key: str) -> str:
    return "HPCQUEUE_" + key.upper().replace("-", "_")


class Config:
    def __init__(self):
        self.settings: dict[str, Value] = {}
        self.profiles: dict[str, Profile] = {}
        self.problems: list[Problem] = []
        self.files: list[tuple[str, Path]] = []
        self.env: dict = {}

    # ------------------------------------------------------------- loading

    def add_file(self, layer: str, path: Path) -> None:
        data, lines, problems = parse(str(path))
        self.files.append((layer, path))
        if problems:
            self.problems += problems
            return
        site = data.get("site") or path.stem
        where = f"{layer} {path}"
        for key, raw in data["settings"].items():
            value = _relative_to(path, raw) if key == "server-dir" else raw  # as read below
            self.settings[key] = Value(value, f"{where}:{lines[('settings', key)]}")
        for pname, values in data["profiles"].items():
            prof = self.profiles.setdefault(f"{site}/{pname}", Profile(site, pname))
            prof.files.append(str(path))
            for key, value in values.items():
                if key == "template":  # relative to the file that names it
                    resolved = str((path.parent / os.path.expanduser(value)).resolve())
                else:
                    resolved = value
                prof.values[key] = Value(resolved, f"{where}:{lines[('profiles', pname, key)]}")

    def add_env(self, env) -> None:
        self.env = dict(env)
        for key in SETTING_KEYS:
            name = env_key(key)
            if env.get(name):
                self.settings[key] = Value(env[name], f"environment {name}")

    def check(self) -> "Config":
        if self.problems:
            first = self.problems[0]
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise ConfigError(f"{first}{more}: fix it, then check with "
                              f"`hpcqueue config validate {first.file}`")
        return self

    # ------------------------------------------------------------- profiles

    def resolve(self, ref: str) -> Profile:
        if ref in self.profiles:
            return self.profiles[ref]
        active = self.settings.get("site")
        if active is not None and f"{active.value}/{ref}" in self.profiles:
            return self.profiles[f"{active.value}/{ref}"]
        named = [p for p in self.profiles.values() if p.name == ref]
        if len(named) == 1:
            return named[0]
        of_site = [p for p in self.profiles.values() if p.site == ref]
        if of_site:
            default = [p for p in of_site if p.name == "default"]
            if default or len(of_site) == 1:
                return (default or of_site)[0]
            raise UsageError(f"site {ref!r} has several profiles: name one of "
                             f"{', '.join(p.qualified for p in of_site)}")
        if len(named) > 1:
            raise UsageError(f"profile {ref!r} exists in several sites: name one of "
                             f"{', '.join(p.qualified for p in named)} (or set the site with "
                             "HPCQUEUE_SITE)")
        known = ", ".join(sorted(self.profiles)) or "none"
        raise UsageError(f"no profile {ref!r}: `hpcqueue config profiles` lists them "
                         f"(known: {known})")

    def effective(self, profile: Profile | None, flags: dict | None = None) -> dict:
        """key -> Value for a queue: the profile, then HPCQUEUE_* variables, then flags."""
        out = dict(profile.values) if profile is not None else {}
        for option in OPTIONS:
            name = option.env_var
            if name and self.env.get(name):
                raw = self.env[name]
                try:
                    out[option.profile_key] = Value(option.kind.from_text(raw),
                                                    f"environment {name}")
                except ValueError as e:
                    raise UsageError(f"${name}={raw!r}: {e}") from None
        for key, value in (flags or {}).items():
            out[key] = Value(value, "command line")
        out.pop("description", None)
        return out


def load(env=None) -> Config:
    """Every layer of files, then the environment (flags are given per use)."""
    env = os.environ if env is None else env
    cfg = Config()
    for layer, directory in layer_dirs(env):
        if directory.is_dir():
            for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
                cfg.add_file(layer, path)
    cfg.add_env(env)
    return cfg


def _relative_to(path: Path, value: str) -> str:
    """A path from config file PATH: ~ expanded, relative to the file's directory."""
    return str((path.parent / os.path.expanduser(value)).resolve())


def server_dir_setting(env=None) -> Value | None:
    """``settings.server-dir`` from the config files, later layers winning (the default server
    dir, below ``--server-dir`` and ``$HPCQUEUE_SERVER_DIR``); None when no file sets it.

    Every command without those reads this, so only files that mention ``server-dir`` are
    parsed (most never are).  A file whose ``server-dir`` is wrong, or that does not parse,
    is an error naming it (rather than another server dir); its other problems are left to
    the commands that use them."""
    env = os.environ if env is None else env
    found = None
    for layer, directory in layer_dirs(env):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            if "server-dir" not in text:
                continue
            data, lines, problems = parse(str(path), text)
            bad = [p for p in problems if p.key in ("-", "settings", "settings.server-dir")]
            if bad:
                raise ConfigError(f"{bad[0]}: fix it, then check with "
                                  f"`hpcqueue config validate {path}`")
            if "server-dir" in data.get("settings", {}):
                found = Value(_relative_to(path, data["settings"]["server-dir"]),
                              f"{layer} {path}:{lines[('settings', 'server-dir')]}")
    return found


def queue_fields(values: dict) -> dict:
    """QueueParams keyword arguments from effective profile values."""
    out = {}
    for key, v in values.items():
        field_name = PROFILE_KEYS[key][1]
        if field_name is not None:
            out[field_name] = v.value
    return out
