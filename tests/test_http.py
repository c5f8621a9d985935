"""The HTTP API: a real `server start --http-port 0` with a worker, spoken to over HTTP(S).

At the end, the app in process (aiohttp's test server): slow clients, a journal that cannot
be written, and a fuzz of methods, paths, headers and bodies that may only ever get a 2xx or
a 4xx (or the wait of a foreground job), never a 5xx or a crash.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import ssl
import stat
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import wait_for
from hpcqueue.exceptions import JournalUnavailable
from hpcqueue.server import http as http_api
from hpcqueue.server.config import ServerConfig
from hpcqueue.server.core import Core
from hpcqueue.state import ServerState


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self):
        return json.loads(self.body)


class Client:
    """Requests to the API of one server, with its token (or another, or none)."""

    def __init__(self, url: str, token: str, context: ssl.SSLContext | None = None):
        self.url, self.token, self.context = url, token, context

    def __call__(self, method, path, body=None, headers=None, token="ok", timeout=60) -> Reply:
        u = urllib.parse.urlsplit(self.url)
        if u.scheme == "https":
            conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout,
                                               context=self.context)
        else:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'ok' else token}"
        if isinstance(body, str):
            body = body.encode()
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return Reply(r.status, r.msg, r.read())
        finally:
            conn.close()

    def post(self, body, background=False, json_spec=False, **headers) -> Reply:
        h = {k.replace("_", "-"): v for k, v in headers.items()}
        if background:
            h["X-Hpcqueue-Background"] = "true"
        if json_spec:
            h["Content-Type"] = "application/json"
            body = json.dumps(body)
        return self("POST", "/jobs", body, h)

    def job(self, job_id) -> dict:
        r = self("GET", f"/jobs/{job_id}")
        assert r.status == 200, r
        return r.json()


def client_of(cluster, context=None) -> Client:
    record = cluster.access()
    return Client(record["http_url"], record["http_token"], context)


@pytest.fixture
def api(cluster):
    cluster.start_server("--http-port", "0")
    cluster.start_worker("--cpus", "2")
    return client_of(cluster)


def job_list(cluster) -> list[dict]:
    return json.loads(cluster.hq("job", "list", "--output", "json").stdout)


def assert_refusal(r: Reply, status: int, words: str) -> None:
    assert r.status == status, (r.status, r.body)
    error = r.json()["error"]
    assert words in error and "\n" not in error, error


# ------------------------------------------------------------------ a real server


def test_foreground_post_returns_the_tasks_stdout_and_exit_code(api):
    r = api.post("echo hi")
    assert r.status == 200 and r.body == b"hi\n"
    assert r.headers["X-Hpcqueue-Exit-Code"] == "0"
    assert r.headers["X-Hpcqueue-State"] == "finished"
    job = int(r.headers["X-Hpcqueue-Job"])
    r = api.post("echo out; echo err >&2; exit 3")
    assert r.status == 200 and r.body == b"out\n"  # stdout only
    assert r.headers["X-Hpcqueue-Exit-Code"] == "3"
    assert r.headers["X-Hpcqueue-State"] == "failed"
    assert int(r.headers["X-Hpcqueue-Job"]) == job + 1


def test_background_post_returns_the_job_which_then_finishes(api, cluster):
    r = api.post("sleep 0.5; echo later", background=True)
    assert r.status == 202
    reply = r.json()
    assert reply == {"job": 1, "tasks": 1, "existing": False}
    assert r.headers["X-Hpcqueue-Job"] == "1" and "X-Hpcqueue-Exit-Code" not in r.headers
    wait_for(lambda: api.job(1)["state"] == "finished", what="job 1 to finish")
    out = cluster.server_dir / "http" / "job-1" / "0.stdout"
    assert out.read_text() == "later\n"
    # DELETE cancels; an unknown id is a 404 with a reason
    r = api.post("sleep 60", background=True, X_Gearman_Priority="high")
    assert r.status == 202 and api.job(2)["priority"] == 100
    wait_for(lambda: api.job(2)["state"] == "running", what="job 2 to start")
    r = api("DELETE", "/jobs/2")
    assert r.status == 200 and r.json() == {"canceled": [2]}
    wait_for(lambda: api.job(2)["state"] == "canceled", what="job 2 to be canceled")
    assert_refusal(api("GET", "/jobs/99"), 404, "no job 99")
    assert_refusal(api("DELETE", "/jobs/99"), 404, "no job 99")
    assert_refusal(api("GET", "/jobs/abc"), 404, "a job id is a whole number")


def test_without_the_token_401_and_nothing_is_submitted(api, cluster):
    for token, headers in ((None, {}), ("wrong", {}), (api.token + "x", {}),
                           (None, {"Authorization": f"Basic {api.token}"}),
                           (None, {"Authorization": api.token})):
        for method, path in (("POST", "/jobs"), ("GET", "/jobs/1"), ("DELETE", "/jobs/1"),
                             ("GET", "/elsewhere")):
            r = api(method, path, "echo hi", headers, token=token)
            assert_refusal(r, 401, "hpcqueue server http-token")
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert job_list(cluster) == []
    assert api.post("echo hi").body == b"hi\n"  # the right token still works


def test_a_duplicate_unique_key_returns_the_same_job(api, cluster):
    r = api.post("sleep 1; echo once", background=True, X_Hpcqueue_Unique="nightly")
    assert r.status == 202 and r.json()["existing"] is False
    job = r.json()["job"]
    again = api.post("echo twice", background=True, X_Gearman_Unique="nightly")
    assert again.json() == {"job": job, "tasks": 1, "existing": True}
    # a foreground duplicate waits for that same job and answers with its stdout
    fg = api.post("echo twice", X_Hpcqueue_Unique="nightly")
    assert fg.status == 200 and fg.body == b"once\n"
    assert fg.headers["X-Hpcqueue-Job"] == str(job)
    assert [j["id"] for j in job_list(cluster)] == [job]
    # the key is free again once the job ended
    assert api.post("echo new", X_Hpcqueue_Unique="nightly").body == b"new\n"


def test_100_concurrent_posts_all_succeed(api, cluster):
    def post(i):
        return i, api.post(f"echo {i}", timeout=120)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(post, range(100), timeout=150))
    assert time.monotonic() - t0 < 150
    for i, r in results:
        assert r.status == 200 and r.body == f"{i}\n".encode(), (i, r)
        assert r.headers["X-Hpcqueue-Exit-Code"] == "0"
    assert len({r.headers["X-Hpcqueue-Job"] for _, r in results}) == 100
    assert len(job_list(cluster)) == 100


def test_json_specs_array_each_line_from_json(api, cluster):
    http_dir = cluster.server_dir / "http"
    r = api.post({"shell": "echo task $HPCQUEUE_TASK_ID", "array": "1-5", "name": "arr",
                  "priority": "low", "env": {"GREETING": "hi"}}, background=True,
                 json_spec=True)
    assert r.status == 202 and r.json()["tasks"] == 5
    job = r.json()["job"]
    wait_for(lambda: api.job(job)["state"] == "finished", what="the array job")
    info = api.job(job)
    assert info["name"] == "arr" and info["priority"] == -100 and info["array"] == "1-5"
    assert info["spec"]["env"] == {"GREETING": "hi"}
    assert [(http_dir / f"job-{job}" / f"{i}.stdout").read_text() for i in range(1, 6)] == \
        [f"task {i}\n" for i in range(1, 6)]
    r = api.post({"command": ["sh", "-c", "echo \"$HPCQUEUE_ENTRY\""],
                  "from_json": [{"a": 1}, [2]]}, background=True, json_spec=True)
    job = r.json()["job"]
    wait_for(lambda: api.job(job)["state"] == "finished", what="the from_json job")
    assert (http_dir / f"job-{job}" / "1.stdout").read_text() == "[2]\n"
    r = api.post({"each_line": ["echo a", "", "# a comment", "echo b"]}, background=True,
                 json_spec=True)
    assert r.json()["tasks"] == 2
    # a JSON spec of one task may run in the foreground, with a duration as text
    r = api.post({"command": ["echo", "json"], "time_limit": "1m"}, json_spec=True)
    assert r.status == 200 and r.body == b"json\n"
    # but the foreground is for one task
    r = api.post({"shell": "true", "array": "1-3"}, json_spec=True)
    assert_refusal(r, 400, "X-Hpcqueue-Background: true")


def test_bad_requests_get_a_4xx_with_a_reason_and_the_server_keeps_serving(api, cluster):
    json_type = {"Content-Type": "application/json"}
    cases = [
        ("POST", "/jobs", "", {}, 400, "the body is empty"),
        ("POST", "/jobs", b"\xff\xfe", {}, 400, "UTF-8"),
        ("POST", "/jobs", "{", json_type, 400, "not valid JSON"),
        ("POST", "/jobs", "[" * 100_000, json_type, 400, "not valid JSON"),
        ("POST", "/jobs", '"echo hi"', json_type, 400, "a JSON job spec is an object"),
        ("POST", "/jobs", '{"shell": "true", "bogus": 1}', json_type, 400, "unknown field"),
        ("POST", "/jobs", '{"shell": "true", "cpus": "2"}', json_type, 400, "'cpus'"),
        ("POST", "/jobs", '{"shell": "true", "command": ["true"]}', json_type, 400,
         "cannot be combined"),
        ("POST", "/jobs", '{"shell": "true", "array": "5-1"}', json_type, 400,
         "ends before it starts"),
        ("POST", "/jobs", '{"shell": "true", "env": {"A B": "x"}}', json_type, 400, "'env'"),
        ("POST", "/jobs", '{"name": "x"}', json_type, 400, "a job needs"),
        ("POST", "/jobs", '{"each_line": []}', json_type, 400, "holds no tasks"),
        ("POST", "/jobs", "true", {"X-Hpcqueue-Priority": "urgent"}, 400,
         "X-Hpcqueue-Priority"),
        ("POST", "/jobs", "true", {"X-Gearman-Priority": str(2**40)}, 400, "'priority'"),
        ("POST", "/jobs", "true", {"X-Hpcqueue-Background": "maybe"}, 400,
         "true or false"),
        ("POST", "/jobs", "true", {"X-Hpcqueue-Unique": "k" * 300}, 400, "'unique'"),
        ("POST", "/jobs", "echo \0", {}, 400, "NUL"),
        ("POST", "/jobs", "echo hi", {"Content-Encoding": "gzip"}, 400, "Content-Encoding"),
        ("GET", "/", None, {}, 404, "POST /jobs"),
        ("GET", "/jobs", None, {}, 405, "GET is not allowed"),
        ("PUT", "/jobs/1", "x", {}, 405, "PUT is not allowed"),
    ]
    for method, path, body, headers, status, words in cases:
        assert_refusal(api(method, path, body, headers), status, words)
    # what is not HTTP at all: aiohttp's own 400, and one line in the log, no traceback
    u = urllib.parse.urlsplit(api.url)
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"):
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall(garbage)
            assert s.recv(64).startswith(b"HTTP/1.0 400")
    assert job_list(cluster) == []
    assert api.post("echo still here").body == b"still here\n"
    assert "Traceback" not in cluster.log("server.log")
    assert "refused a malformed request" in cluster.log("server.log")  # once a minute


def test_a_too_large_body_is_413_and_the_server_keeps_serving(api, cluster):
    big = b"x" * (http_api.MAX_BODY + 1)
    assert_refusal(api("POST", "/jobs", big), 413, "larger than")
    # without a Content-Length (chunked), it is cut off as it arrives
    u = urllib.parse.urlsplit(api.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request("POST", "/jobs", body=iter([big[:1 << 20]] * 17),
                     headers={"Authorization": f"Bearer {api.token}"}, encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 413 and b"larger than" in r.read()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed before the client finished sending: refused all the same
    finally:
        conn.close()
    assert job_list(cluster) == []
    assert api.post("echo fine").body == b"fine\n"


def test_a_client_that_goes_away_leaves_its_job_running(api, cluster, tmp_path):
    mark = tmp_path / "mark"
    u = urllib.parse.urlsplit(api.url)
    body = f"sleep 1; echo done > {mark}".encode()
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + api.token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        wait_for(lambda: job_list(cluster), what="the job")
    wait_for(mark.exists, what="the job to go on without its client")
    wait_for(lambda: api.job(1)["state"] == "finished", what="job 1 to finish")


def test_server_stop_ends_a_waiting_foreground_request_at_once(cluster):
    cluster.start_server("--http-port", "0")  # no worker: the job never runs
    api = client_of(cluster)
    replies = []
    thread = threading.Thread(target=lambda: replies.append(api.post("echo never")))
    thread.start()
    wait_for(lambda: job_list(cluster), what="the job")
    cluster.hq("server", "stop")
    thread.join(timeout=20)
    assert replies and replies[0].status == 503, replies
    assert "stopping" in replies[0].json()["error"]
    assert cluster.server.wait(timeout=20) == 0


def test_http_jobs_are_journaled(cluster, tmp_path):
    journal = tmp_path / "journal"
    cluster.start_server("--http-port", "0", "--journal", journal)
    api = client_of(cluster)
    assert api.post("true", background=True, X_Hpcqueue_Unique="k").status == 202
    cluster.hq("server", "stop")
    cluster.server.wait(timeout=20)
    cluster.start_server("--http-port", "0", "--journal", journal)
    api = client_of(cluster)
    assert api.job(1)["spec"]["unique"] == "k"
    assert api.post("true", background=True, X_Hpcqueue_Unique="k").json()["existing"]


def test_http_token_prints_the_token_and_url_of_the_access_record(cluster):
    cluster.start_server()
    p = cluster.hq("server", "http-token", check=False)
    assert p.returncode == 1 and "does not serve HTTP" in p.stderr and "--http-port" in p.stderr
    assert "Traceback" not in p.stderr
    cluster.hq("server", "stop")
    cluster.server.wait(timeout=20)
    cluster.start_server("--http-port", "0")
    record = cluster.access()
    assert stat.S_IMODE(os.stat(cluster.server_dir / "access.json").st_mode) == 0o600
    assert len(record["http_token"]) >= 32
    assert cluster.hq("server", "http-token").stdout.strip() == record["http_token"]
    url = cluster.hq("server", "http-token", "--url").stdout.strip()
    assert url == record["http_url"] and url.startswith("http://127.0.0.1:")


def test_non_loopback_needs_tls_and_a_self_signed_pair_serves_https(cluster, tmp_path):
    # half a pair is refused, in one line that names the three choices
    p = cluster.hq("server", "start", "--host", "127.0.0.1", "--http-port", "0",
                   "--http-host", "0.0.0.0", "--http-cert", tmp_path / "cert.pem",
                   check=False, timeout=30)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    for choice in ("--http-cert and --http-key", "self-signed", "--http-insecure"):
        assert choice in p.stderr
    assert not (cluster.server_dir / "access.json").exists()
    # so is a pair that does not load
    (tmp_path / "cert.pem").write_text("not a certificate")
    p = cluster.hq("server", "start", "--host", "127.0.0.1", "--http-port", "0",
                   "--http-host", "0.0.0.0", "--http-cert", tmp_path / "cert.pem",
                   "--http-key", tmp_path / "cert.pem", check=False, timeout=30)
    assert p.returncode != 0 and "cannot serve TLS" in p.stderr and "Traceback" not in p.stderr
    # with neither, the server makes a self-signed pair in its dir and speaks only TLS
    cluster.start_server("--http-port", "0", "--http-host", "0.0.0.0")
    cluster.start_worker()
    cert, key = cluster.server_dir / "http-cert.pem", cluster.server_dir / "http-key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    record = cluster.access()
    assert record["http_url"].startswith("https://")
    port = urllib.parse.urlsplit(record["http_url"]).port
    trusted = ssl.create_default_context(cafile=str(cert))  # verifies the name, too
    api = Client(f"https://127.0.0.1:{port}", record["http_token"], trusted)
    r = api.post("echo secret")
    assert r.status == 200 and r.body == b"secret\n"
    with pytest.raises(ssl.SSLCertVerificationError):  # not without trusting the pair
        Client(f"https://127.0.0.1:{port}", record["http_token"]).post("echo no")
    plain = Client(f"http://127.0.0.1:{port}", record["http_token"])
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        plain.post("echo no")
    # the pair is made once: a restart keeps it
    first = cert.read_bytes()
    cluster.hq("server", "stop")
    cluster.server.wait(timeout=20)
    cluster.start_server("--http-port", "0", "--http-host", "0.0.0.0")
    assert cert.read_bytes() == first
    cluster.hq("server", "stop")
    cluster.server.wait(timeout=20)
    # --http-insecure serves plain HTTP on a non-loopback address
    cluster.start_server("--http-port", "0", "--http-host", "0.0.0.0", "--http-insecure")
    record = cluster.access()
    assert record["http_url"].startswith("http://")
    port = urllib.parse.urlsplit(record["http_url"]).port
    r = Client(f"http://127.0.0.1:{port}", record["http_token"]).post("true", background=True)
    assert r.status == 202  # (the worker stopped with the first server)
    assert "travels in clear" in cluster.log("server.log")


# ------------------------------------------------------------------ the app in process

TOKEN = "t" * 43
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def in_process(test, tmp_path, body_timeout=http_api.BODY_TIMEOUT, core_setup=None):
    """Run `test(client, core)` against the app on a test server, with a core of its own."""
    from aiohttp.test_utils import TestClient, TestServer

    async def main():
        core = Core(ServerState())
        if core_setup is not None:
            core_setup(core)
        api = http_api.Api(core, TOKEN, tmp_path, body_timeout=body_timeout)
        async with TestClient(TestServer(http_api.make_app(api))) as client:
            await test(client, core)

    asyncio.run(main())


def test_a_slow_body_is_408(tmp_path):
    async def test(client, core):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + TOKEN.encode() + b"\r\nContent-Length: 100\r\n\r\necho")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head, head
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert b"did not arrive in time" in await reader.readexactly(length)
        writer.close()
        assert core.state.jobs == {}
        r = await client.post("/jobs", data="true", headers={**AUTH,
                                                             "X-Hpcqueue-Background": "1"})
        assert r.status == 202

    in_process(test, tmp_path, body_timeout=0.5)


@pytest.mark.skipif(sys.version_info < (3, 10),
                    reason="aiohttp closes half-sent requests from 3.14.4, for Python 3.10+")
def test_a_client_that_never_finishes_its_headers_is_cut_off(tmp_path, monkeypatch):
    monkeypatch.setattr(http_api, "IDLE_TIMEOUT", 0.5)

    async def main():
        core = Core(ServerState())
        site = http_api.HttpApi(ServerConfig(server_dir=tmp_path, http_port=0))
        await site.start(core)
        try:
            u = urllib.parse.urlsplit(site.url)
            reader, writer = await asyncio.open_connection(u.hostname, u.port)
            writer.write(b"POST /jobs HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            await writer.drain()
            t0 = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 10) == b""
            assert time.monotonic() - t0 < 5
            writer.close()
        finally:
            await site.stop()

    asyncio.run(main())


def test_a_journal_that_cannot_be_written_is_503_with_the_reason(tmp_path):
    def journal_down(core):
        core.journal = SimpleNamespace(path="/scratch/journal")
        core.journal_down = JournalUnavailable("/scratch/journal", "No space left on device")

    async def test(client, core):
        r = await client.post("/jobs", data="true", headers=AUTH)
        assert r.status == 503
        assert "No space left on device" in (await r.json())["error"]
        assert core.state.jobs == {}

    in_process(test, tmp_path, core_setup=journal_down)


FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.sampled_from(["1-3", "1-0", "high", "10m", "x=1", "%{NOPE}", "\0", "echo hi", ""])
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)
json_specs = st.dictionaries(
    st.sampled_from([*http_api.JSON_FIELDS, "bogus"]),
    json_values | st.sampled_from([["echo", "x"], ["a", "b"], {"gpus": 1}, {"A": "b"}]),
    max_size=5)
#: specs that mostly pass, so that the fields' checks (and the submits) are reached too
near_valid = st.builds(lambda base, extra: {**base, **extra}, st.sampled_from([
    {"shell": "true"}, {"command": ["true"]}, {"each_line": ["true", "false"]},
    {"shell": "true", "array": "1-3"}, {"command": ["true"], "from_json": [1, {"a": 2}]},
]), st.dictionaries(st.sampled_from(list(http_api.JSON_FIELDS)[5:]), json_values
                   | st.sampled_from([1, 2, "high", "10m", "name", {"gpus": 1}, {"A": "b"}]),
                   max_size=2))
bodies = st.one_of(
    st.binary(max_size=64), st.text(max_size=32).map(str.encode),
    st.sampled_from([b"echo hi", b"", b"  ", b"exit 3", b"{}", b"[]", b"null", b"{"]),
    json_specs.map(lambda d: json.dumps(d).encode()),
    near_valid.map(lambda d: json.dumps(d).encode()),
    near_valid.map(lambda d: json.dumps(d).encode()))
routes = st.sampled_from([("POST", "/jobs")] * 10 + [
    ("GET", "/jobs/1"), ("GET", "/jobs/last"), ("DELETE", "/jobs/1"), ("DELETE", "/jobs/last"),
    ("GET", "/jobs/x"), ("GET", "/jobs/0"), ("GET", "/jobs/99999999999999999999"),
    ("GET", "/jobs/%00"), ("HEAD", "/jobs/1"), ("PUT", "/jobs/1"), ("POST", "/jobs/1"),
    ("GET", "/"), ("GET", "/jobs/1/2")])
requests = st.fixed_dictionaries({
    "route": routes,
    "auth": st.sampled_from(["ok"] * 8 + ["wrong", "none"]),
    "json": st.booleans(),
    "background": st.booleans(),
    "encoding": st.sampled_from([None] * 4 + ["gzip", "deflate", "br", "identity"]),
    "headers": st.dictionaries(
        st.sampled_from(["X-Hpcqueue-Background", "X-Gearman-Background",
                         "X-Hpcqueue-Priority", "X-Gearman-Priority", "X-Hpcqueue-Unique",
                         "X-Gearman-Unique", "Content-Type"]),
        st.one_of(*[st.sampled_from(["true", "false", "high", "-3", "application/json",
                                     "text/plain", "gzip", ""])] * 3, header_text),
        max_size=3),
    "body": bodies,
})


@FUZZ
@given(reqs=st.lists(requests, min_size=1, max_size=4))
def test_fuzz_requests_get_2xx_or_4xx_and_the_server_stays_up(tmp_path, reqs):
    async def test(client, core):
        for req in reqs:
            method, path = req["route"]
            headers = dict(req["headers"])
            if req["json"]:
                headers.setdefault("Content-Type", "application/json")
            if req["background"]:
                headers.setdefault("X-Hpcqueue-Background", "true")
            if req["encoding"] and method != "HEAD":
                # (aiohttp's own refusal of an encoding it cannot decode answers HEAD with a
                # body, which its client then rejects: not ours to test)
                headers["Content-Encoding"] = req["encoding"]
            if req["auth"] != "none":
                headers["Authorization"] = f"Bearer {TOKEN if req['auth'] == 'ok' else 'x'}"
            before = len(core.state.jobs)
            try:
                r = await asyncio.wait_for(client.request(
                    method, path, data=req["body"], headers=headers), 2.0)
            except asyncio.TimeoutError:
                # only a foreground job waits (for a worker that never comes)
                assert method == "POST" and len(core.state.jobs) <= before + 1
                assert core.waiters
                continue
            body = await r.read()
            assert 200 <= r.status < 300 or 400 <= r.status < 500, (r.status, body)
            if r.status == 401:
                assert len(core.state.jobs) == before
            if r.status >= 400 and method != "HEAD" and \
                    r.content_type == "application/json":
                assert "\n" not in json.loads(body)["error"]
        # still serving
        r = await client.post("/jobs", data="true",
                              headers={**AUTH, "X-Hpcqueue-Background": "true"})
        assert r.status == 202

    in_process(test, tmp_path)
