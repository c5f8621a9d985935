"""The schema of a config file, checked on the YAML node tree so that every
problem names the file, the line and the key (and the nearest valid key for a
typo).

A file::

    site: mysite                 # optional; the file name without .yaml otherwise
    description: text
    settings:                    # optional
      server-dir: ~/hq           # default server dir
      site: mysite               # the active site: plain profile names resolve in it
      profile: cpu               # the default profile for `alloc add`
    profiles:
      cpu:
        scheduler: slurm
        partition: cpu
        time-limit: 1h
        ...
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from hpcqueue.autoalloc.options import OPTIONS


@dataclass
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}"


# ---------------------------------------------------------------- keys

def _str(v):
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v


#: profile key -> (check, QueueParams field or None): from the table of queue options
#: (hpcqueue/autoalloc/options.py), and a description
PROFILE_KEYS = {"description": (_str, None),
                **{o.profile_key: (o.kind.check, o.field) for o in OPTIONS if o.profile_key}}

SETTING_KEYS = {
    "server-dir": _str,
    "site": _str,
    "profile": _str,
}

TOP_KEYS = {"site": _str, "description": _str, "settings": None, "profiles": None}


def _transport_problem(scheduler: str, transport: str) -> str | None:
    """What is wrong with TRANSPORT for SCHEDULER (the scheduler's class says), if anything."""
    from hpcqueue.autoalloc import backends

    allowed = backends.transports_for(scheduler)
    if transport not in allowed:
        return f"{transport} does not work with {scheduler}: use one of {', '.join(allowed)}"
    return None


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"


def _line(node) -> int:
    return node.start_mark.line + 1


def parse(path: str, text: str | None = None):
    """(data, lines, problems): the file's values, the line of each key path, and what is
    wrong with it.  ``lines`` maps ("profiles", NAME, KEY) style tuples to line numbers."""
    import yaml

    problems: list[Problem] = []
    lines: dict[tuple, int] = {}
    name = os.fspath(path)
    try:
        if text is None:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        return {}, lines, [Problem(name, None, "-", f"cannot read: {e.strerror}")]
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        return {}, lines, [Problem(name, mark.line + 1 if mark else None, "-",
                                   f"not valid YAML: {getattr(e, 'problem', e)}")]
    if root is None:
        return {}, lines, []
    if not isinstance(root, yaml.MappingNode):
        return {}, lines, [Problem(name, _line(root), "-", "a config file must be a mapping")]
    data = yaml.safe_load(text) or {}
    out: dict = {"settings": {}, "profiles": {}}

    def mapping_items(node, where: str):
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []  # `settings:` with every key commented out
        if not isinstance(node, yaml.MappingNode):
            problems.append(Problem(name, _line(node), where, "must be a mapping"))
            return []
        return [(k.value, k, v) for k, v in node.value]

    for key, knode, vnode in mapping_items(root, "-"):
        if key not in TOP_KEYS:
            problems.append(Problem(name, _line(knode), key,
                                    "unknown key" + _suggest(key, TOP_KEYS)))
            continue
        value = data.get(key) or {}
        lines[(key,)] = _line(knode)
        if key == "settings":
            for skey, sk, _ in mapping_items(vnode, "settings"):
                lines[("settings", skey)] = _line(sk)
                if skey not in SETTING_KEYS:
                    problems.append(Problem(name, _line(sk), f"settings.{skey}",
                                            "unknown key" + _suggest(skey, SETTING_KEYS)))
                    continue
                try:
                    out["settings"][skey] = SETTING_KEYS[skey](value[skey])
                except ValueError as e:
                    problems.append(Problem(name, _line(sk), f"settings.{skey}", str(e)))
        elif key == "profiles":
            for pname, pk, pnode in mapping_items(vnode, "profiles"):
                lines[("profiles", pname)] = _line(pk)
                values = {}
                raw = (value or {}).get(pname) or {}
                for k, kn, _ in mapping_items(pnode, f"profiles.{pname}"):
                    lines[("profiles", pname, k)] = _line(kn)
                    if k not in PROFILE_KEYS:
                        problems.append(Problem(name, _line(kn), f"profiles.{pname}.{k}",
                                                "unknown key" + _suggest(k, PROFILE_KEYS)))
                        continue
                    try:
                        values[k] = PROFILE_KEYS[k][0](raw[k])
                    except ValueError as e:
                        problems.append(Problem(name, _line(kn), f"profiles.{pname}.{k}", str(e)))
                if "scheduler" in values and "transport" in values:
                    problem = _transport_problem(values["scheduler"], values["transport"])
                    if problem:
                        problems.append(Problem(name, lines[("profiles", pname, "transport")],
                                                f"profiles.{pname}.transport", problem))
                out["profiles"][pname] = values
        else:
            try:
                out[key] = TOP_KEYS[key](value)
            except ValueError as e:
                problems.append(Problem(name, _line(knode), key, str(e)))
    return out, lines, problems
