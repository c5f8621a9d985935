"""The parameters of an allocation queue, from a site profile, HPCQUEUE_* variables and
the options given (flags of `alloc add`, or arguments of a script), in that order.

:func:`build_params` is what `hpcqueue alloc add` and `alloc dry-run` call; it reads the
configuration files and the environment (see :mod:`hpcqueue.config`), and a --template
file, and returns checked :class:`~hpcqueue.autoalloc.model.QueueParams`.
"""

from __future__ import annotations

import os
from typing import Any, Collection, Mapping

from hpcqueue.autoalloc.model import QueueParams
from hpcqueue.autoalloc.options import OPTIONS
from hpcqueue.exceptions import UsageError

#: the options `alloc add` takes as flags (the table: hpcqueue/autoalloc/options.py)
FLAGS = tuple(o.field for o in OPTIONS if o.flag)


def interface_address(name: str) -> str:
    """The IPv4 address of a network interface of this machine."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                 struct.pack("256s", name.encode()[:15]))
        except OSError:
            raise UsageError(f"server-address: this machine has no interface {name!r} with an "
                             "IPv4 address (see `ip addr`)") from None
    return socket.inet_ntoa(packed[20:24])


def build_params(opts: Mapping[str, Any], given: Collection[str] | None = None) -> QueueParams:
    """QueueParams from the profile, HPCQUEUE_* variables and the options OPTS, in that
    order.  OPTS holds `scheduler` (required), `profile`, `extra_args` and the options of
    FLAGS; GIVEN names those of them given explicitly (the others are defaults, which a
    profile overrides); None: every one with a value."""
    from hpcqueue import config

    cfg = config.load().check()
    flags = {}
    for o in OPTIONS:
        if (o.flag and o.profile_key and (given is None or o.field in given)
                and opts.get(o.field) is not None):
            flags[o.profile_key] = opts[o.field]
    if opts.get("extra_args"):
        flags["extra-args"] = list(opts["extra_args"])
    ref = opts.get("profile") or (cfg.settings["profile"].value if "profile" in cfg.settings
                                  else None)
    profile = cfg.resolve(ref) if ref else None
    values = cfg.effective(profile, flags)
    scheduler = opts["scheduler"]
    wanted = values.get("scheduler")
    if wanted is not None and wanted.value != scheduler:
        raise UsageError(f"profile {profile.qualified} is for {wanted.value}, not {scheduler} "
                         f"(from {wanted.source})")
    values.pop("scheduler", None)
    fields = config.queue_fields(values)
    if "time_limit" not in fields:
        raise UsageError("no time limit: give --time-limit, or use a profile that sets "
                         "time-limit")
    if fields.get("template"):
        fields["template"] = os.path.abspath(os.path.expanduser(fields["template"]))
        try:
            with open(fields["template"], encoding="utf-8") as f:
                fields["template_text"] = f.read()
        except OSError as e:
            raise UsageError(f"template {fields['template']}: {e.strerror}") from None
    address = fields.get("server_address")
    if address:
        kind, value = next(iter(address.items()))
        fields["server_host"] = value if kind == "hostname" else interface_address(value)
    params = QueueParams(scheduler=scheduler, name=opts.get("name"),
                         profile=profile.qualified if profile else None, **fields)
    return params.validate()
