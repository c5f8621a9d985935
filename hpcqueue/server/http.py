"""The HTTP API: submit, inspect and cancel jobs over HTTP, as gearmand's HTTP protocol does.

`server start --http-port P` serves it with aiohttp on the server's own event loop, beside
the TCP protocol; docs/http.md describes it for users.  Vocabulary:

- a *foreground* request (the default) submits a one-task job, waits until it ends and
  answers with the task's stdout; the job goes on if the client goes away;
- a *background* request (``X-Hpcqueue-Background: true``) answers at once with the job id;
- the *token* is the bearer token every request carries; the server makes a new one at each
  start and keeps it, with the API's URL, in the 0600 access record.

Every request goes through the same handlers as the TCP protocol (so through
:meth:`Core.record` and the journal), and every refusal is a 4xx with a one-line JSON
``{"error": ...}`` (503 while the journal cannot be written).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import secrets
from functools import partial
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from hpcqueue.access import ensure_private_dir
from hpcqueue.jobspec import make_spec
from hpcqueue.exceptions import (
    HpcqueueError, JournalUnavailable, NotFound, RequestError, UsageError,
)
from hpcqueue.jobs import MAX_CRASH_LIMIT, MAX_RETRIES
from hpcqueue.model import ENV_NAME, MAX_COUNT, parse_duration, parse_priority
from hpcqueue.server import handlers
from hpcqueue.server.config import ServerConfig
from hpcqueue.server.core import Core
from hpcqueue.server.checks import _is_int, brief, check_int, check_seconds
from hpcqueue.server.lifecycle import DROP_LOG_INTERVAL, RateLimitedLog
from hpcqueue.server.specs import check_spec
from hpcqueue.server.tls import is_loopback, tls_context, url_host

log = logging.getLogger("hpcqueue.server")

MAX_BODY = 16 << 20  # bytes of a request body: a job spec of ~100k lines, not a data set
BODY_TIMEOUT = 30.0  # seconds a client may take to send its body, so a slow one cannot linger
IDLE_TIMEOUT = 30.0  # seconds an idle connection (or one still sending its headers) is kept
SHUTDOWN_TIMEOUT = 2.0  # seconds `server stop` gives HTTP requests in progress to end
CHUNK = 256 << 10  # bytes of a task's stdout read at a time
OUTPUT_DIR = "http"  # in the server dir: the submit dir of HTTP jobs and their stdout/stderr
#: where an HTTP job's tasks write, unless its JSON spec says otherwise: the server reads it
HTTP_STDOUT = "%{SUBMIT_DIR}/job-%{JOB_ID}/%{TASK_ID}.stdout"
HTTP_STDERR = "%{SUBMIT_DIR}/job-%{JOB_ID}/%{TASK_ID}.stderr"
HEADER_PREFIXES = ("X-Hpcqueue-", "X-Gearman-")  # gearmand's headers are accepted as aliases
ROUTES = "POST /jobs, GET /jobs/ID and DELETE /jobs/ID"


# ------------------------------------------------------------------ JSON job specs

def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_str(value) -> bool:
    return isinstance(value, str)


#: the fields of a JSON job spec (docs/http.md shows them): what each must be, and a check of
#: its JSON type where that says it (None: checked as it is converted, by range or parsing)
JSON_FIELDS = {
    "command": ("a non-empty list of strings (the program and its arguments)",
                lambda v: _strings(v) and bool(v)),
    "shell": ("a non-empty string (a command for /bin/sh)",
              lambda v: _is_str(v) and bool(v.strip())),
    "array": ('task ids as a string, e.g. "1-10", "0-99:2" or "1,5,10-20"',
              lambda v: _is_str(v) or _is_int(v)),
    "each_line": ("a list of strings (one task per non-blank line)", _strings),
    "from_json": ("a list (one task per element)", lambda v: isinstance(v, list)),
    "name": ("a string", _is_str),
    "cpus": ("a whole number, 1 or more", None),
    "resources": ('a map of resource names to counts, e.g. {"gpus": 1}',
                  lambda v: isinstance(v, dict)),
    "priority": ("high, normal, low or a whole number", lambda v: _is_str(v) or _is_int(v)),
    "unique": ("a string", _is_str),
    "max_retries": (f"a whole number from 0 to {MAX_RETRIES}", None),
    "crash_limit": (f"a whole number from 1 to {MAX_CRASH_LIMIT}", None),
    "time_limit": ('seconds, or a duration such as "90s", "10m" or "01:30:00"', None),
    "time_request": ('seconds, or a duration such as "90s", "10m" or "01:30:00"', None),
    "stdout": ("a path (a string)", _is_str),
    "stderr": ("a path (a string)", _is_str),
    "cwd": ("a directory (a string)", _is_str),
    "env": ('a map of variable names to strings, e.g. {"OMP_NUM_THREADS": "4"}',
            lambda v: isinstance(v, dict) and all(
                ENV_NAME.fullmatch(k) and _is_str(s) for k, s in v.items())),
}


def _duration(value, key: str):
    if isinstance(value, str):
        try:
            return parse_duration(value, repr(key))
        except UsageError as e:
            raise RequestError(str(e)) from None
    return check_seconds(value, key)


def spec_from_json(data, submit_dir: str) -> dict:
    """A job spec from a JSON job spec, built by the same code as `hpcqueue submit`'s."""
    if not isinstance(data, dict):
        raise RequestError('a JSON job spec is an object, e.g. {"shell": "echo hi"}, not '
                           f"{brief(data)}")
    unknown = sorted(str(k) for k in data if k not in JSON_FIELDS)
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r} in the job spec: the fields are "
                           f"{', '.join(JSON_FIELDS)}")
    fields = {k: v for k, v in data.items() if v is not None}
    for key, value in fields.items():
        what, shape = JSON_FIELDS[key]
        if shape is not None and not shape(value):
            raise RequestError(f"{key!r} must be {what}, not {brief(value)}")
    for group in (("command", "shell"), ("array", "each_line", "from_json")):
        given = [k for k in group if k in fields]
        if len(given) > 1:
            raise RequestError(f"{' and '.join(map(repr, given))} cannot be combined")
    if not ({"command", "shell", "each_line"} & set(fields)):
        raise RequestError('a job needs "command" (a list), "shell" (a string) or '
                           '"each_line" (shell lines)')
    opts = {k: fields.get(k) for k in ("name", "unique", "stdout", "stderr", "cwd")}
    opts["array"] = str(fields["array"]) if "array" in fields else None
    opts["cpus"] = check_int(fields.get("cpus", 1), "cpus", 1, MAX_COUNT)
    opts["max_retries"] = check_int(fields.get("max_retries", 0), "max_retries", 0,
                                    MAX_RETRIES)
    opts["crash_limit"] = check_int(fields.get("crash_limit", 5), "crash_limit", 1,
                                    MAX_CRASH_LIMIT)
    opts["priority"] = _priority(fields.get("priority", 0), "'priority'")
    for key in ("time_limit", "time_request"):
        opts[key] = _duration(fields.get(key), key)
    opts["resources"] = [f"{k}={check_int(v, f'resources.{k}', 0, MAX_COUNT)}"
                         for k, v in fields.get("resources", {}).items()]
    opts["env"] = [f"{k}={v}" for k, v in fields.get("env", {}).items()]
    command = fields.get("command") or []
    if "shell" in fields:
        command = ["/bin/sh", "-c", fields["shell"]]
        opts["name"] = opts["name"] or _shell_name(fields["shell"])
    lines = items = None
    if "each_line" in fields:
        lines = [line for line in fields["each_line"] if line.strip()]
    if "from_json" in fields:
        items = [json.dumps(x) for x in fields["from_json"]]
    source = "'each_line'" if lines is not None else "'from_json'"
    return _spec(opts, command, lines=lines, items=items, source=source,
                 submit_dir=submit_dir)


def spec_from_text(text: str, submit_dir: str) -> dict:
    """A one-task job spec from a shell command."""
    if not text.strip():
        raise RequestError("the body is empty: POST a shell command (text/plain) or a JSON "
                           "job spec (application/json)")
    opts = {"name": _shell_name(text)}
    return _spec(opts, ["/bin/sh", "-c", text], submit_dir=submit_dir)


def _shell_name(text: str) -> str:
    words = text.split()
    return os.path.basename(words[0])[:64] if words else "sh"


def _priority(value, what: str) -> int:
    try:
        prio = parse_priority(value)
    except UsageError as e:
        raise RequestError(f"{what}: {e}") from None
    return check_int(prio, "priority", -MAX_COUNT, MAX_COUNT)


def _spec(opts: dict, command: list[str], **kw) -> dict:
    opts["stdout"] = opts.get("stdout") or HTTP_STDOUT
    opts["stderr"] = opts.get("stderr") or HTTP_STDERR
    try:
        return make_spec(opts, command, **kw)
    except UsageError as e:
        raise RequestError(str(e)) from None


# ------------------------------------------------------------------ requests


def _header(request: web.Request, name: str) -> str | None:
    for prefix in HEADER_PREFIXES:
        value = request.headers.get(prefix + name)
        if value is not None:
            return value
    return None


def _flag(request: web.Request, name: str) -> bool:
    value = _header(request, name)
    if value is None:
        return False
    word = value.strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off", ""):
        return False
    raise RequestError(f"X-Hpcqueue-{name} must be true or false, not {brief(value)}")


def _job_ref(request: web.Request):
    ref = request.match_info["ref"]
    if ref == "last":
        return ref
    if not re.fullmatch(r"[0-9]{1,18}", ref):
        raise NotFound(f"no job {brief(ref)}: a job id is a whole number")
    return int(ref)


def error(status: int, message: str, headers=None) -> web.Response:
    """A refusal: the status and a one-line JSON reason."""
    return web.json_response({"error": " ".join(message.split())}, status=status,
                             headers=headers)


_dumps = partial(json.dumps, default=str)


class Api:
    """The request handlers, over one core."""

    def __init__(self, core: Core, token: str, output_dir: Path,
                 body_timeout: float = BODY_TIMEOUT):
        self.core = core
        self.token = token.encode()
        self.output_dir = output_dir
        self.body_timeout = body_timeout
        #: set when the server stops: foreground requests stop waiting
        self.stopping = asyncio.Event()

    def authorized(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), self.token)

    @web.middleware
    async def guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Authentication first; then every refusal becomes a 4xx (or 503) with a reason."""
        if not self.authorized(request):
            return error(401, "missing or wrong bearer token: send `Authorization: Bearer "
                              "TOKEN` (`hpcqueue server http-token` prints it)",
                         headers={"WWW-Authenticate": 'Bearer realm="hpcqueue"'})
        try:
            return await handler(request)
        except web.HTTPException as e:
            return _http_error(request, e)
        except NotFound as e:
            return error(404, str(e))
        except JournalUnavailable as e:
            return error(503, str(e))
        except HpcqueueError as e:
            return error(400, str(e))

    async def _body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY, request.content_length)
        try:
            return await asyncio.wait_for(request.read(), self.body_timeout)
        except asyncio.TimeoutError:
            raise web.HTTPRequestTimeout() from None
        except (web.RequestPayloadError, HttpProcessingError) as e:  # e.g. a bad gzip body
            raise RequestError(f"the body could not be read ({' '.join(str(e).split())}): "
                               "is its Content-Encoding right?") from None

    async def post_job(self, request: web.Request) -> web.StreamResponse:
        background = _flag(request, "Background")
        priority, unique = _header(request, "Priority"), _header(request, "Unique")
        body = await self._body(request)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("the body must be UTF-8 text") from None
        submit_dir = str(self.output_dir)
        if request.content_type == "application/json":
            try:
                data = json.loads(text)
            except (ValueError, RecursionError) as e:
                raise RequestError(f"the body is not valid JSON: {e}") from None
            spec = spec_from_json(data, submit_dir)
        else:
            spec = spec_from_text(text, submit_dir)
        if priority is not None:
            spec["priority"] = _priority(priority, "X-Hpcqueue-Priority")
        if unique is not None:
            spec["unique"] = unique
        spec = check_spec(spec)
        tasks = sum((b - a) // s + 1 for a, b, s in spec["ids"])
        if not background and tasks != 1:
            raise RequestError(f"a foreground request runs one task, and this job has "
                               f"{tasks:,}: send `X-Hpcqueue-Background: true`")
        reply = handlers.submit(self.core, {"spec": spec})
        headers = {"X-Hpcqueue-Job": str(reply["job"])}
        if background:
            return web.json_response(reply, status=202, headers=headers)
        if reply["tasks"] != 1:
            raise RequestError(f"unique key {spec['unique']!r} belongs to job {reply['job']} "
                               f"of {reply['tasks']:,} tasks: a foreground request waits "
                               "for one task; send `X-Hpcqueue-Background: true`")
        return await self._foreground(request, reply["job"], headers)

    async def _foreground(self, request: web.Request, job_id: int,
                          headers: dict) -> web.StreamResponse:
        """Wait for the job's one task to end; answer with its stdout."""
        core = self.core
        waiter = core.add_waiter({job_id})
        try:
            if not waiter.event.is_set():
                ended = asyncio.ensure_future(waiter.event.wait())
                stopping = asyncio.ensure_future(self.stopping.wait())
                try:
                    await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ended.cancel()
                    stopping.cancel()
        finally:  # also when the client went away: the job goes on, only the wait ends
            core.remove_waiter(waiter)
        if not waiter.event.is_set():
            return error(503, f"the server is stopping before job {job_id} ended; it keeps "
                              "the job if it has a journal", headers=headers)
        job = core.state.jobs[job_id]
        row = job.task_row(0)
        headers["X-Hpcqueue-State"] = row["state"]
        if row["exit_code"] is not None:
            headers["X-Hpcqueue-Exit-Code"] = str(row["exit_code"])
        try:
            files = handlers.cat(core, {"job": job_id, "stream": "stdout"})["files"]
        except RequestError:  # its stdout was not kept
            files = []
        response = web.StreamResponse(headers=headers)
        response.content_type = "text/plain"
        await response.prepare(request)
        for _, path in files:
            await _send_file(response, path)
        await response.write_eof()
        return response

    async def get_job(self, request: web.Request) -> web.Response:
        info = handlers.job_info(self.core, {"job": _job_ref(request)})
        return web.json_response(info, dumps=_dumps)

    async def delete_job(self, request: web.Request) -> web.Response:
        return web.json_response(handlers.cancel(self.core, {"jobs": _job_ref(request)}))


async def _send_file(response: web.StreamResponse, path: str) -> None:
    loop = asyncio.get_running_loop()
    try:
        f = open(path, "rb")
    except OSError:  # the task never opened it (e.g. its command was not found)
        return
    with f:
        while True:
            chunk = await loop.run_in_executor(None, f.read, CHUNK)
            if not chunk:
                return
            await response.write(chunk)


def _http_error(request: web.Request, e: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method, too large, too slow) as one line."""
    headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
    if isinstance(e, web.HTTPNotFound):
        message = f"no such path {request.path!r}: the API has {ROUTES}"
    elif isinstance(e, web.HTTPMethodNotAllowed):
        message = f"{request.method} is not allowed on {request.path!r}: the API has {ROUTES}"
    elif isinstance(e, web.HTTPRequestEntityTooLarge):
        message = f"the body is larger than {MAX_BODY:,} bytes: split the job"
    elif isinstance(e, web.HTTPRequestTimeout):
        message = "the request body did not arrive in time"
    else:
        message = e.text or e.reason
    response = error(e.status, message, headers=headers)
    if e.status in (408, 413):
        response.force_close()  # the rest of the body is not read
    return response


def make_app(api: Api) -> web.Application:
    app = web.Application(middlewares=[api.guard], client_max_size=MAX_BODY)
    app.router.add_post("/jobs", api.post_job)
    app.router.add_get("/jobs/{ref}", api.get_job)
    app.router.add_delete("/jobs/{ref}", api.delete_job)
    return app


# ------------------------------------------------------------------ the site


class _Strangers(logging.Filter):
    """aiohttp's reports of requests that are not HTTP (or break its limits) become one
    line, at most one per interval, as the TCP side does for strangers; a traceback stays
    for the rest, which are our bugs."""

    def __init__(self):
        super().__init__()
        self.dropped = RateLimitedLog(log, DROP_LOG_INTERVAL)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, (HttpProcessingError, web.RequestPayloadError)):
            return True
        reason = " ".join(str(getattr(exc, "message", None) or exc).split())[:200]
        peer = f" from {record.args[0]}" if isinstance(record.args, tuple) and record.args \
            else ""
        self.dropped.log(f"HTTP API: refused a malformed request{peer}: {reason}")
        return False


#: the logger aiohttp reports connection errors to
server_log = logging.getLogger("hpcqueue.server.http")
server_log.addFilter(_Strangers())


class HttpApi:
    """The API's site.  Built from the config at the start of `Server.startup` (so that a TLS
    mistake stops the server before anything is journaled), started once the core exists,
    stopped at shutdown."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.ssl = tls_context(cfg)
        self.token = secrets.token_urlsafe(32)
        self.url: str | None = None
        self.api: Api | None = None
        self.runner: web.AppRunner | None = None

    async def start(self, core: Core) -> None:
        cfg = self.cfg
        self.api = Api(core, self.token, ensure_private_dir(cfg.server_dir / OUTPUT_DIR))
        self.runner = web.AppRunner(
            make_app(self.api), access_log=None, logger=server_log, handler_cancellation=True,
            keepalive_timeout=IDLE_TIMEOUT, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self.runner.setup()
        site = web.TCPSite(self.runner, cfg.http_host, cfg.http_port, ssl_context=self.ssl,
                           reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self.runner.cleanup()
            raise HpcqueueError(f"cannot serve HTTP on {cfg.http_host}:{cfg.http_port}: "
                                f"{e.strerror or e}") from None
        port = self.runner.addresses[0][1]
        scheme = "https" if self.ssl is not None else "http"
        self.url = f"{scheme}://{url_host(cfg.http_host)}:{port}"
        if self.ssl is None and not is_loopback(cfg.http_host):
            log.warning("the HTTP API serves plain HTTP on %s (--http-insecure): its token "
                        "travels in clear", cfg.http_host)
        log.info("HTTP API at %s", self.url)

    async def stop(self) -> None:
        if self.api is not None:
            self.api.stopping.set()
        if self.runner is not None:
            await self.runner.cleanup()
