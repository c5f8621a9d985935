"""Handshake and frames: only a peer with the key gets in, tampering is caught."""

import pytest

from hpcqueue import protocol
from hpcqueue.exceptions import AuthenticationError, ProtocolError


def handshake(client_key, server_key):
    sn, hello = protocol.server_hello()
    _, cn, answer = protocol.client_hello(client_key, hello)
    cn2, reply = protocol.server_check(server_key, sn, answer)
    protocol.client_check(client_key, sn, cn, reply)
    return (protocol.Session(server_key, sn, cn2, is_server=True),
            protocol.Session(client_key, sn, cn, is_server=False))


def test_round_trip_both_ways():
    key = protocol.new_key()
    server, client = handshake(key, key)
    box = client.seal({"op": "submit", "n": [1, 2, 3]})
    n = protocol.frame_length(box[:4])
    assert server.open(box[4:4 + n]) == {"op": "submit", "n": [1, 2, 3]}
    box = server.seal({"ok": True})
    assert client.open(box[4:]) == {"ok": True}


def test_wrong_key_is_refused_by_the_server():
    with pytest.raises(AuthenticationError):
        handshake(protocol.new_key(), protocol.new_key())


def test_server_without_the_key_is_refused_by_the_client():
    key = protocol.new_key()
    sn, hello = protocol.server_hello()
    _, cn, _ = protocol.client_hello(key, hello)
    forged = bytes([protocol.STATUS_OK]) + bytes(protocol.PROOF_LEN)
    with pytest.raises(AuthenticationError):
        protocol.client_check(key, sn, cn, forged)


def test_garbage_is_not_a_client():
    sn, _ = protocol.server_hello()
    with pytest.raises(ProtocolError):
        protocol.server_check(protocol.new_key(), sn, b"GET / HTTP/1.1\r\n" * 4)


def test_tampered_replayed_and_oversized_frames_fail():
    key = protocol.new_key()
    server, client = handshake(key, key)
    box = bytearray(client.seal({"op": "x"}))
    box[-1] ^= 1
    with pytest.raises(ProtocolError, match="authentication"):
        server.open(bytes(box[4:]))
    server2, client2 = handshake(key, key)
    first = client2.seal({"op": "a"})
    server2.open(first[4:])
    with pytest.raises(ProtocolError):
        server2.open(first[4:])  # the same frame again
    with pytest.raises(ProtocolError, match="limit"):
        protocol.frame_length((protocol.MAX_FRAME + 1).to_bytes(4, "big"))


def test_frames_are_encrypted():
    key = protocol.new_key()
    _, client = handshake(key, key)
    assert b"secret-command" not in client.seal({"cmd": "secret-command"})
