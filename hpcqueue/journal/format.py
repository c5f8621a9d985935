"""The journal's file header and version check."""

from __future__ import annotations

import struct

from hpcqueue.exceptions import JournalError

MAGIC = b"HPCQJRNL"
VERSION = 1
HEADER = struct.Struct("<8sH6x")
HEADER_LEN = HEADER.size


def header() -> bytes:
    return HEADER.pack(MAGIC, VERSION)


def check_header(data: bytes, path) -> None:
    if len(data) < HEADER_LEN or data[:8] != MAGIC:
        if len(data) < HEADER_LEN and MAGIC.startswith(data):
            raise JournalError(
                f"{path} is a journal cut short in its header: delete it or give "
                "another --journal path"
            )
        raise JournalError(
            f"{path} is not an hpcqueue journal: give another --journal path "
            "(hpcqueue never overwrites a file it did not write)"
        )
    _, version = HEADER.unpack(data[:HEADER_LEN])
    if version != VERSION:
        raise JournalError(
            f"{path} has journal format version {version}, and this hpcqueue reads "
            f"version {VERSION}: use the hpcqueue release that wrote it"
        )
