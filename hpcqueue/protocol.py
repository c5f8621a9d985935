"""Wire protocol: an authenticated handshake, then encrypted msgpack frames.

Every connection starts with a fixed-size handshake, before any frame is read:

1. server -> client: ``MAGIC, version, server_nonce[16]``
2. client -> server: ``MAGIC, version, client_nonce[16], HMAC(key, "client"|sn|cn)``
3. server -> client: ``status[1], HMAC(key, "server"|sn|cn)``

The server checks the client's proof with a constant-time compare and drops a
peer that fails it, so an unauthenticated peer never gets a frame parsed.  The
client checks the server's proof too, so a stranger on the port cannot pose as
the server and collect tasks' results.

After the handshake each direction has its own key, derived from the shared
secret and both nonces, and every frame is sealed with ChaCha20-Poly1305
(from the `cryptography` package): ``length[4] || ciphertext+tag``.  The
nonce is a per-direction counter, so a replayed, reordered or altered frame
fails to open and the connection is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from hpcqueue.exceptions import AuthenticationError, ConnectionLost, ProtocolError

MAGIC = b"HPCQ"
VERSION = 1
NONCE_LEN = 16
PROOF_LEN = 32
SERVER_HELLO_LEN = len(MAGIC) + 1 + NONCE_LEN
CLIENT_HELLO_LEN = len(MAGIC) + 1 + NONCE_LEN + PROOF_LEN
SERVER_REPLY_LEN = 1 + PROOF_LEN
STATUS_OK, STATUS_BAD_KEY = 0, 1
MAX_FRAME = 256 * 1024 * 1024
KEY_LEN = 32
_LEN = struct.Struct(">I")


def new_key() -> bytes:
    return os.urandom(KEY_LEN)


def _mac(key: bytes, label: bytes, sn: bytes, cn: bytes) -> bytes:
    return hmac.new(key, label + sn + cn, hashlib.sha256).digest()


class Session:
    """The sealing and opening of frames for one side of one connection."""

    __slots__ = ("_tx", "_rx", "_tx_n", "_rx_n", "_pack")

    def __init__(self, key: bytes, sn: bytes, cn: bytes, is_server: bool):
        c2s = ChaCha20Poly1305(_mac(key, b"c2s", sn, cn))
        s2c = ChaCha20Poly1305(_mac(key, b"s2c", sn, cn))
        self._tx, self._rx = (s2c, c2s) if is_server else (c2s, s2c)
        self._tx_n = 0
        self._rx_n = 0
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def seal(self, message) -> bytes:
        nonce = b"\0\0\0\0" + self._tx_n.to_bytes(8, "little")
        self._tx_n += 1
        box = self._tx.encrypt(nonce, self._pack(message), None)
        return _LEN.pack(len(box)) + box

    def open(self, box: bytes):
        nonce = b"\0\0\0\0" + self._rx_n.to_bytes(8, "little")
        self._rx_n += 1
        try:
            data = self._rx.decrypt(nonce, box, None)
        except InvalidTag:
            raise ProtocolError("a frame failed authentication (corrupted or forged)") from None
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several types for bad data
            raise ProtocolError(f"a frame could not be decoded: {e}") from None


def frame_length(header: bytes) -> int:
    (n,) = _LEN.unpack(header)
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes is over the limit of {MAX_FRAME}")
    return n


# --------------------------------------------------------------------- handshake pieces


def server_hello() -> tuple[bytes, bytes]:
    sn = os.urandom(NONCE_LEN)
    return sn, MAGIC + bytes([VERSION]) + sn


def client_hello(key: bytes, hello: bytes) -> tuple[bytes, bytes, bytes]:
    """From the server's hello, the client's answer; returns (sn, cn, answer)."""
    if len(hello) != SERVER_HELLO_LEN or hello[:4] != MAGIC:
        raise ProtocolError("the peer is not an hpcqueue server")
    if hello[4] != VERSION:
        raise ProtocolError(
            f"the server speaks protocol version {hello[4]}, this client {VERSION}: "
            "use the same hpcqueue version on both sides"
        )
    sn = hello[5:]
    cn = os.urandom(NONCE_LEN)
    return sn, cn, MAGIC + bytes([VERSION]) + cn + _mac(key, b"client", sn, cn)


def server_check(key: bytes, sn: bytes, answer: bytes) -> tuple[bytes, bytes]:
    """Check a client's answer; returns (cn, reply).  Raises on a bad peer."""
    if answer[:4] != MAGIC:
        raise ProtocolError("the peer is not an hpcqueue client")
    if answer[4] != VERSION:
        raise ProtocolError(f"the peer speaks protocol version {answer[4]}, not {VERSION}")
    cn = answer[5 : 5 + NONCE_LEN]
    proof = answer[5 + NONCE_LEN :]
    if not hmac.compare_digest(proof, _mac(key, b"client", sn, cn)):
        raise AuthenticationError("the peer does not know the server key")
    return cn, bytes([STATUS_OK]) + _mac(key, b"server", sn, cn)


def bad_key_reply() -> bytes:
    return bytes([STATUS_BAD_KEY]) + bytes(PROOF_LEN)


def client_check(key: bytes, sn: bytes, cn: bytes, reply: bytes) -> None:
    if reply[0] == STATUS_BAD_KEY:
        raise AuthenticationError(
            "the server rejected our key: the access record does not belong to the "
            "server on that address (was the server restarted with another server dir?)"
        )
    if not hmac.compare_digest(reply[1:], _mac(key, b"server", sn, cn)):
        raise AuthenticationError("the peer on the server's address does not know the key")


# --------------------------------------------------------------------- asyncio side


async def read_exactly(reader, n: int) -> bytes:
    import asyncio

    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ConnectionLost("connection closed by peer") from None
    except (ConnectionError, OSError) as e:
        raise ConnectionLost(f"connection lost: {e}") from None


async def server_handshake(reader, writer, key: bytes) -> Session:
    sn, hello = server_hello()
    writer.write(hello)
    head = await read_exactly(reader, 5)
    if head[:4] != MAGIC:  # drop strangers at once, not after the handshake timeout
        raise ProtocolError("the peer is not an hpcqueue client")
    answer = head + await read_exactly(reader, CLIENT_HELLO_LEN - 5)
    try:
        cn, reply = server_check(key, sn, answer)
    except AuthenticationError:
        writer.write(bad_key_reply())
        raise
    writer.write(reply)
    return Session(key, sn, cn, is_server=True)


async def client_handshake(reader, writer, key: bytes) -> Session:
    hello = await read_exactly(reader, SERVER_HELLO_LEN)
    sn, cn, answer = client_hello(key, hello)
    writer.write(answer)
    reply = await read_exactly(reader, SERVER_REPLY_LEN)
    client_check(key, sn, cn, reply)
    return Session(key, sn, cn, is_server=False)


async def read_message(reader, session: Session):
    n = frame_length(await read_exactly(reader, 4))
    return session.open(await read_exactly(reader, n))


# --------------------------------------------------------------------- blocking side


class BlockingConnection:
    """A synchronous connection for the command line: connect, request, reply."""

    def __init__(self, host: str, port: int, key: bytes, timeout: float | None = 30.0):
        import socket

        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = self._recv(SERVER_HELLO_LEN)
        sn, cn, answer = client_hello(key, hello)
        self.sock.sendall(answer)
        client_check(key, sn, cn, self._recv(SERVER_REPLY_LEN))
        self.session = Session(key, sn, cn, is_server=False)

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionLost("the server closed the connection")
            buf += chunk
        return bytes(buf)

    def send(self, message) -> None:
        self.sock.sendall(self.session.seal(message))

    def recv(self):
        n = frame_length(self._recv(4))
        return self.session.open(self._recv(n))

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
