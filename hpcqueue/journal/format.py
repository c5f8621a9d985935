"""The journal's file layout: a checked header, then checksummed frames of events.

Version 2 (this one)::

    header  16 bytes  b"HPCQJRNL", u16 version = 2, u16 reserved, u32 CRC-32 of the 12 before
    frame   12 bytes  b"\\xc1HQ\\x02", u32 payload length, u32 CRC-32 of length + payload
            payload   one or more msgpack maps (events), back to back

Each write of the server is one frame, so a frame is whole or torn, never half of one event
and half of another.  0xc1 is a byte msgpack never uses as a type, which makes a frame's start
easy to find again after damage.  CRC-32 detects every single-bit flip and every burst of up
to 32 bits, so damage is found, not replayed.

Version 1 (0.1.0) had an unchecked header and bare msgpack maps; it is read only to be
upgraded (`hpcqueue journal upgrade`, or `server start --journal-upgrade`).
"""

from __future__ import annotations

import struct
import zlib

from hpcqueue.exceptions import JournalError

MAGIC = b"HPCQJRNL"
VERSION = 2
HEADER = struct.Struct("<8sHHI")
HEADER_LEN = HEADER.size  # 16, as in version 1
V1_HEADER = struct.Struct("<8sH6x")

FRAME_MAGIC = b"\xc1HQ\x02"
FRAME = struct.Struct("<4sII")
FRAME_LEN = FRAME.size
MAX_PAYLOAD = 1 << 31  # a longer length field is damage, not data

UPGRADE_HINT = ("upgrade it with `hpcqueue journal upgrade {path}` (a backup is kept), or "
                "start the server with --journal-upgrade")


def header(version: int = VERSION) -> bytes:
    head = struct.pack("<8sHH", MAGIC, version, 0)
    return head + struct.pack("<I", zlib.crc32(head))


def frame(payload: bytes) -> bytes:
    """A frame holding PAYLOAD (packed events)."""
    length = struct.pack("<I", len(payload))
    return FRAME_MAGIC + length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length)))


def frame_at(buf, offset: int, end: int) -> int | None:
    """The payload length of a whole, intact frame at OFFSET of BUF (which ends at END), or
    None if there is none there."""
    if end - offset < FRAME_LEN or buf[offset:offset + 4] != FRAME_MAGIC:
        return None
    _, length, crc = FRAME.unpack_from(buf, offset)
    start = offset + FRAME_LEN
    if length > MAX_PAYLOAD or start + length > end:
        return None
    if zlib.crc32(buf[start:start + length], zlib.crc32(buf[offset + 4:offset + 8])) != crc:
        return None
    return length


def next_frame(buf, offset: int, end: int) -> int | None:
    """The offset of the first intact frame after OFFSET, or None."""
    find = buf.find
    pos = offset
    while True:
        pos = find(FRAME_MAGIC, pos + 1, end)
        if pos < 0:
            return None
        if frame_at(buf, pos, end) is not None:
            return pos


def read_version(data: bytes, path) -> int:
    """The format version of a journal whose first HEADER_LEN bytes are DATA."""
    if len(data) < HEADER_LEN or data[:8] != MAGIC:
        if len(data) < HEADER_LEN and MAGIC.startswith(data[:8]):
            raise JournalError(
                f"{path} is a journal cut short in its header: delete it or give "
                "another --journal path"
            )
        raise JournalError(
            f"{path} is not an hpcqueue journal (no journal header at byte 0): give another "
            "--journal path (hpcqueue never overwrites a file it did not write)"
        )
    version = struct.unpack_from("<H", data, 8)[0]
    if version == 1 and data[10:HEADER_LEN] == bytes(6):
        return 1
    magic, version, _, crc = HEADER.unpack(data[:HEADER_LEN])
    if zlib.crc32(data[:12]) != crc:
        raise JournalError(
            f"{path} has a damaged header (bytes 0-15 fail their checksum): nothing was "
            f"read; `hpcqueue journal repair {path}` writes a journal from the intact records")
    if version != VERSION:
        raise JournalError(
            f"{path} has journal format version {version}, and this hpcqueue reads "
            f"version {VERSION}: use the hpcqueue release that wrote it"
        )
    return version


def check_header(data: bytes, path) -> None:
    """Refuse anything but a version-2 header."""
    if read_version(data, path) == 1:
        raise JournalError(f"{path} has journal format version 1 (hpcqueue 0.1.0): "
                           + UPGRADE_HINT.format(path=path))
