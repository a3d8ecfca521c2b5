"""Loopback HTTP servers speaking the OpenAI and Anthropic wire protocols, for tests.

Each server runs on 127.0.0.1 (free port) in a background thread and answers from a FIFO
script of recorded exchanges (``tests/fixtures/recorded-api-traffic.json``) or synthetic
failures; with an empty script it answers a recorded default. Point the SDKs at it with::

    with OpenAIServer() as srv:      # OpenAI(base_url=srv.base_url)      -> http://127.0.0.1:P/v1
        ...
    with AnthropicServer() as srv:   # Anthropic(base_url=srv.base_url)   -> http://127.0.0.1:P
        ...
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import select
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES_PATH = Path(__file__).parent / "fixtures" / "recorded-api-traffic.json"

__all__ = [
    "AnthropicServer",
    "OpenAIServer",
    "RecordedRequest",
    "load_fixtures",
    "sse_events",
]


@functools.lru_cache(maxsize=1)
def _all_fixtures() -> tuple[dict, ...]:
    return tuple(json.loads(FIXTURES_PATH.read_text(encoding="utf-8")))


def load_fixtures(
    provider: str | None = None,
    endpoint: str | None = None,
    stream: bool | None = None,
    tools: bool | None = None,
    status: int | None = None,
) -> list[dict]:
    """Recorded exchanges matching every given filter (deep copies, in file order)."""
    return [
        copy.deepcopy(e)
        for e in _all_fixtures()
        if (provider is None or e["provider"] == provider)
        and (endpoint is None or e["endpoint"] == endpoint)
        and (stream is None or e["stream"] == stream)
        and (tools is None or e["tools"] == tools)
        and (status is None or e["response"]["status"] == status)
    ]


def sse_events(sse: str) -> list[str]:
    """Split raw SSE text into events, each ending with its blank-line terminator."""
    return [chunk + "\n\n" for chunk in sse.replace("\r\n", "\n").split("\n\n") if chunk.strip()]


@dataclass
class RecordedRequest:
    """One request as received: ``body`` is the parsed JSON (None if empty or not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float = field(default_factory=time.monotonic)  # when the server read it
    raw: bytes = field(default=b"", repr=False)  # the body as sent (a multipart upload is not JSON)
    query: str = ""  # after the "?" (Azure's api-version)
    original_path: str = ""  # a cloud server's own path, before it maps it to the API's (tests/cloud_servers.py)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _HTTPServer

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        req = RecordedRequest(
            self.command,
            self.path.split("?", 1)[0],
            {k.lower(): v for k, v in self.headers.items()},
            body,
            raw=raw,
            query=self.path.partition("?")[2],
        )
        self.server.owner._dispatch(self, req)

    do_GET = do_DELETE = do_PUT = do_POST

    # -- writers used by _LoopbackServer --------------------------------------------------

    def send_bytes(self, status: int, content_type: str, data: bytes, headers: dict | None = None) -> None:
        """Complete response with Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self._headers_buffer.extend((b"\r\n", data))  # headers + body in one send
        self.flush_headers()

    def send_sse(self, status: int, content_type: str, events: list[str], complete: bool = True) -> None:
        """Chunked SSE, one chunk per event; if not complete, drop the connection mid-body."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for ev in events:
            data = ev.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        if complete:
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.drop()

    def send_drip(self, status: int, content_type: str, data: bytes, every_s: float, stopping: threading.Event,
                  chunked: bool = False, prefix: bytes = b"") -> None:
        """Headers and ``prefix`` at once, then ``data`` one byte every ``every_s`` seconds
        (Content-Length framing, or one chunk per byte); stops as soon as the client goes away or
        the server stops."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(prefix) + len(data)))
        self.end_headers()
        try:
            if prefix:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(prefix), prefix) if chunked else prefix)
            for i in range(len(data)):
                if stopping.wait(every_s) or self.client_gone():
                    return self.drop()
                byte = data[i:i + 1]
                self.wfile.write(b"1\r\n%s\r\n" % byte if chunked else byte)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def send_truncated(self, status: int, content_type: str, data: bytes, declared_length: int,
                       headers: dict | None = None, reset: bool = False) -> None:
        """Declare ``declared_length`` bytes of body, send only ``data``, then close the connection
        (with a TCP reset if ``reset``)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(declared_length))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self._headers_buffer.extend((b"\r\n", data))
        self.flush_headers()
        self.abort() if reset else self.drop()

    def send_events(self, status: int, content_type: str, events: list[str], end: str, pause_s: float,
                    stopping: threading.Event) -> None:
        """Chunked SSE, one chunk per event, then (after ``pause_s``, cut short if the client goes
        away) ``end``: "terminate" (the zero chunk), "drop" (close) or "reset" (TCP RST)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            for ev in events:
                data = ev.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if pause_s > 0 and self.linger(pause_s, stopping):
                return self.drop()
            if end == "terminate":
                self.wfile.write(b"0\r\n\r\n")
            elif end == "reset":
                self.abort()
            else:
                self.drop()
        except OSError:
            self.close_connection = True

    def linger(self, seconds: float, stopping: threading.Event) -> bool:
        """Wait up to ``seconds``; True (stop now) if the client went away or the server is stopping."""
        end = time.monotonic() + seconds
        while not stopping.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self.client_gone(min(left, 0.05)):
                return True
        return True

    def hang(self, seconds: float, stopping: threading.Event) -> None:
        """Send nothing until the client gives up, ``seconds`` pass or the server stops; then close."""
        self.linger(seconds, stopping)
        self.drop()

    def abort(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), without sending any response."""
        self.close_connection = True
        try:
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the socket's file object holds a reference to its descriptor
            self.request.close()  # now the descriptor is closed: linger 0 sends RST, not FIN
        except OSError:
            pass

    def client_gone(self, wait_s: float = 0.0) -> bool:
        """True when the client has closed its end (waits up to ``wait_s`` for it to happen)."""
        try:
            # poll, not select: select refuses descriptors past 1024, and a long test run has them
            poller = select.poll()
            poller.register(self.request, select.POLLIN | select.POLLHUP)
            if not poller.poll(wait_s * 1000):
                return False
            return self.request.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def drop(self) -> None:
        """Close the connection abruptly (no response / no end of body)."""
        self.close_connection = True
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog: the default 5 resets bursts of connects
    owner: _LoopbackServer

    def __init__(self, owner: _LoopbackServer) -> None:
        self.owner = owner
        self.open_sockets: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address) -> None:
        with self.owner._lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.owner._lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """Client went away (timeout, broken stream, stop()): not worth a traceback."""
        if not isinstance(sys.exc_info()[1], (OSError, ValueError)):
            super().handle_error(request, client_address)


class _LoopbackServer:
    """Common machinery: lifecycle, request log, response script, default answers."""

    provider: str = ""
    env_var: str = ""
    _endpoints: tuple[str, ...] = ()
    _api_prefix: str = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._script: deque[tuple] = deque()
        self.requests: list[RecordedRequest] = []
        self._files: dict[str, bytes] = {}  # the batch APIs' uploads and outputs
        self._batches: dict[str, dict] = {}
        self._httpd = _HTTPServer(self)
        self.port: int = self._httpd.server_address[1]
        self._defaults = {
            (ep, stream): next(iter(load_fixtures(self.provider, ep, stream, tools=False, status=200)), None)
            for ep in self._endpoints
            for stream in (False, True)
        }
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Server root, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """Value for the SDK's ``base_url`` / the provider's ``*_BASE_URL`` env var."""
        return self.url + self._api_prefix

    def env(self) -> dict[str, str]:
        """``{ENV_VAR: base_url}``, e.g. for ``monkeypatch.setenv``."""
        return {self.env_var: self.base_url}

    def stop(self) -> None:
        """Stop serving, wake delayed handlers and close kept-alive connections."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            sockets = list(self._httpd.open_sockets)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget received requests, any unconsumed script and the batches; batch settings back to default."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self._files.clear()
            self._batches.clear()
        self.batch_polls, self.batch_fail = 1, None

    # -- script -------------------------------------------------------------------------

    def enqueue(self, entry: dict) -> None:
        """Answer the next request with this fixture entry's response, verbatim."""
        self._push(("entry", entry))

    def enqueue_error(
        self, status: int, body: dict | None = None, headers: dict | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests with an error status and a provider-shaped body."""
        body = body if body is not None else self.error_body(status)
        for _ in range(times):
            self._push(("error", status, body, dict(headers or {})))

    def enqueue_delay(self, seconds: float, then: dict | None = None) -> None:
        """Sleep before answering (with ``then``, or the default answer if None)."""
        self._push(("delay", seconds, then))

    def enqueue_broken_stream(self, entry: dict, after_events: int) -> None:
        """Send the first ``after_events`` SSE events of ``entry`` then drop the connection."""
        self._push(("broken", entry, after_events))

    def enqueue_raw(self, status: int, content_type: str, data: bytes) -> None:
        """Answer the next request with exactly these bytes (e.g. a proxy's HTML page)."""
        self._push(("raw", status, content_type, data))

    def enqueue_disconnect(self) -> None:
        """Close the socket without sending any response."""
        self._push(("disconnect",))

    def enqueue_drip(self, status: int, content_type: str, data: bytes, every_s: float, times: int = 1,
                     chunked: bool = False, prefix: bytes = b"") -> None:
        """Answer with the headers (and ``prefix``) at once, then ``data`` one byte every ``every_s``
        seconds (Content-Length framing, or chunked with one chunk per byte)."""
        for _ in range(times):
            self._push(("drip", status, content_type, bytes(data), every_s, chunked, bytes(prefix)))

    def enqueue_truncated(self, status: int, content_type: str, data: bytes, declared_length: int,
                          times: int = 1, reset: bool = False) -> None:
        """Answer with ``Content-Length: declared_length`` but send only ``data``, then close the
        connection (``reset=True``: abort it with a TCP reset). ``data=b""``: headers only."""
        if declared_length <= len(data):
            raise ValueError("declared_length must exceed the bytes sent for the body to be truncated")
        for _ in range(times):
            self._push(("truncated", status, content_type, bytes(data), declared_length, reset))

    def enqueue_sse(self, events: list[str], terminate: bool = True, times: int = 1, status: int = 200,
                    content_type: str = "text/event-stream; charset=utf-8", reset: bool = False,
                    pause_s: float = 0.0) -> None:
        """Answer with these raw SSE events (each should end with a blank line), chunked, one chunk
        per event, then wait ``pause_s`` seconds (cut short if the client leaves) and end: with the
        terminating zero chunk, or (``terminate=False``) by closing the connection mid-body, with a
        TCP reset if ``reset``."""
        end = "terminate" if terminate else "reset" if reset else "drop"
        for _ in range(times):
            self._push(("sse", status, content_type, list(events), end, pause_s))

    def enqueue_hang(self, seconds: float, times: int = 1) -> None:
        """Read the request, then send nothing until the client gives up or ``seconds`` pass; close."""
        for _ in range(times):
            self._push(("hang", seconds))

    def enqueue_reset(self, times: int = 1) -> None:
        """Read the request, then abort the connection with a TCP reset (no response at all)."""
        for _ in range(times):
            self._push(("reset",))

    @property
    def pending(self) -> int:
        """Number of scripted answers not yet consumed."""
        with self._lock:
            return len(self._script)

    def _push(self, item: tuple) -> None:
        with self._lock:
            self._script.append(item)

    # -- serving ------------------------------------------------------------------------

    def _dispatch(self, h: _Handler, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)
        if self._serve_unscripted(h, req):  # batch APIs, model lists, tokenizers: never the script
            return
        with self._lock:
            item = self._script.popleft() if self._script else None
        if item and item[0] == "delay":
            if self._stopping.wait(item[1]):
                return h.drop()
            item = ("entry", item[2]) if item[2] is not None else None
        kind = item[0] if item else None
        if kind == "entry":
            self._serve_entry(h, item[1])
        elif kind == "error":
            _, status, body, headers = item
            h.send_bytes(status, "application/json", json.dumps(body).encode(), {**self._id_header(), **headers})
        elif kind == "broken":
            _, entry, n = item
            r = entry["response"]
            h.send_sse(r["status"], r["content_type"], sse_events(r["sse"])[:n], complete=False)
        elif kind == "raw":
            _, status, ctype, data = item
            h.send_bytes(status, ctype, data)
        elif kind == "disconnect":
            h.drop()
        elif kind == "drip":
            _, status, ctype, data, every_s, chunked, prefix = item
            h.send_drip(status, ctype, data, every_s, self._stopping, chunked=chunked, prefix=prefix)
        elif kind == "truncated":
            _, status, ctype, data, declared, reset = item
            h.send_truncated(status, ctype, data, declared, self._id_header(), reset=reset)
        elif kind == "sse":
            _, status, ctype, events, end, pause_s = item
            h.send_events(status, ctype, events, end, pause_s, self._stopping)
        elif kind == "hang":
            h.hang(item[1], self._stopping)
        elif kind == "reset":
            h.abort()
        else:
            self._serve_default(h, req)

    def _serve_entry(self, h: _Handler, entry: dict) -> None:
        r = entry["response"]
        if "sse" in r:
            h.send_sse(r["status"], r["content_type"], sse_events(r["sse"]))
        else:
            h.send_bytes(r["status"], r["content_type"], json.dumps(r["json"]).encode(), self._id_header())

    def _serve_default(self, h: _Handler, req: RecordedRequest) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        stream = bool(body.get("stream"))
        entry = self._defaults.get((req.path, stream)) if req.method == "POST" else None
        if entry is None:
            msg = f"loopback: no default for {req.method} {req.path} (stream={stream})"
            data = json.dumps(self.error_body(404, msg)).encode()
            return h.send_bytes(404, "application/json", data, self._id_header())
        r = entry["response"]
        model = body.get("model")
        if stream:
            sse = r["sse"]
            recorded = _first_model(sse)
            if model and recorded:
                sse = sse.replace(f'"model":{json.dumps(recorded)}', f'"model":{json.dumps(model)}')
            return h.send_sse(r["status"], r["content_type"], self._default_stream_events(sse, body))
        out = dict(r["json"])
        if model and "model" in out:
            out["model"] = model
        if req.path.endswith("/embeddings"):
            out = _embeddings_default(out, body)
        h.send_bytes(r["status"], r["content_type"], json.dumps(out).encode(), self._id_header())

    # -- batch APIs ----------------------------------------------------------------------
    # A batch answers each request with the server's default (non-streaming) answer, or with an
    # error when ``batch_fail(body)`` is true. Its status reports it ended on the ``batch_polls``-th
    # status request (each GET of the batch counts), "in progress" before (so a test can
    # interrupt a run mid-batch and resume it); ``batch_polls=None`` keeps every batch running.

    batch_polls: int | None = 1
    batch_fail: Any = None  # Callable[[dict], bool]: which request bodies the batch fails

    def _serve_unscripted(self, h: _Handler, req: RecordedRequest) -> bool:
        """Answer the endpoints that never consume the script; False for the others."""
        return False

    def _batch_answer(self, path: str, body: dict) -> tuple[int, dict]:
        """(status, JSON) the server would answer ``body`` with at ``path`` (its default answer)."""
        if self.batch_fail is not None and self.batch_fail(body):
            return 400, self.error_body(400, "loopback: this batch request fails")
        entry = self._defaults.get((path, False))
        if entry is None:
            return 404, self.error_body(404, f"loopback: no default for POST {path}")
        out = dict(entry["response"]["json"])
        if body.get("model") and "model" in out:
            out["model"] = body["model"]
        return entry["response"]["status"], out

    def _batch_polled(self, batch: dict) -> tuple[int, bool]:
        """Count one status request of ``batch`` -> (requests done so far, ended)."""
        with self._lock:
            batch["polls"] += 1
            polls, total = batch["polls"], batch["total"]
        if self.batch_polls is None or polls < self.batch_polls:
            return (total * polls // (self.batch_polls or polls * 2 + 1)), False
        return total, True

    def _send_json(self, h: _Handler, status: int, data: dict) -> None:
        h.send_bytes(status, "application/json", json.dumps(data).encode(), self._id_header())

    # -- provider specifics -------------------------------------------------------------

    def _default_stream_events(self, sse: str, body: dict) -> list[str]:
        return sse_events(sse)

    def error_body(self, status: int, message: str | None = None) -> dict:
        raise NotImplementedError

    def _id_header(self) -> dict[str, str]:
        return {}


class OpenAIServer(_LoopbackServer):
    """``/v1/chat/completions`` and ``/v1/embeddings``; ``base_url`` ends with ``/v1``."""

    provider = "openai"
    env_var = "OPENAI_BASE_URL"
    _endpoints = ("/v1/chat/completions", "/v1/embeddings")
    _api_prefix = "/v1"

    _ERRORS = {
        400: ("invalid_request_error", None, "Invalid request."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: test-key."),
        403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
        404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1ms."),
    }

    # ``GET /v1/models`` (never consumes the script): None -> 404, as servers without it answer;
    # a list of ids -> the API's list shape, each entry with ``extra`` fields when given
    models: list[str] | None = None
    model_extra: dict[str, dict] = {}
    # False: the usage chunk is never sent, even with ``stream_options.include_usage`` (llama.cpp's server)
    stream_usage: bool = True

    # True: ``POST /tokenize {"content"}`` answers ``{"tokens": [...]}`` as llama.cpp's server does
    # (here one token per whitespace-separated word, so a test can tell its counts from tiktoken's)
    tokenize: bool = False

    def _serve_unscripted(self, h: _Handler, req: RecordedRequest) -> bool:
        if req.method == "POST" and req.path in ("/tokenize", "/extras/tokenize/count"):
            body = req.body if isinstance(req.body, dict) else {}
            if self.tokenize and req.path == "/tokenize" and isinstance(body.get("content"), str):
                self._send_json(h, 200, {"tokens": list(range(len(body["content"].split())))})
            else:  # as a server without one: 404, and the script is left for the calls
                self._send_json(h, 404, self.error_body(404, f"loopback: no tokenizer at {req.path}"))
            return True
        if req.method == "GET" and req.path == "/v1/models" and self.models is not None:
            data = [{"id": m, "object": "model", "created": 1733000000, "owned_by": "loopback",
                     **self.model_extra.get(m, {})} for m in self.models]
            self._send_json(h, 200, {"object": "list", "data": data})
            return True
        return self._serve_batch_api(h, req)

    def _serve_batch_api(self, h: _Handler, req: RecordedRequest) -> bool:
        """``POST /v1/files`` (multipart, purpose "batch"), ``POST /v1/batches``, ``GET
        /v1/batches/{id}`` and ``GET /v1/files/{id}/content`` (JSONL), as the Batch API documents them."""
        parts = req.path.strip("/").split("/")
        if req.method == "POST" and req.path == "/v1/files":
            fields = _multipart(req.headers.get("content-type", ""), req.raw)
            fid = "file-" + uuid.uuid4().hex[:24]
            with self._lock:
                self._files[fid] = fields.get("file", b"")
            self._send_json(h, 200, {"id": fid, "object": "file", "bytes": len(fields.get("file", b"")),
                                     "created_at": int(time.time()), "filename": "batch.jsonl",
                                     "purpose": (fields.get("purpose") or b"").decode(), "status": "processed"})
        elif req.method == "POST" and req.path == "/v1/batches":
            body = req.body if isinstance(req.body, dict) else {}
            data = self._files.get(str(body.get("input_file_id")))
            if data is None or body.get("endpoint") != "/v1/chat/completions":
                self._send_json(h, 400, self.error_body(400, "loopback: unknown input_file_id or endpoint"))
                return True
            out, err = [], []
            for line in data.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                status, answer = self._batch_answer(item["url"], item["body"])
                row = {"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": item["custom_id"],
                       "response": {"status_code": status, "request_id": "req_" + uuid.uuid4().hex, "body": answer},
                       "error": None}
                (out if status == 200 else err).append(row)
            bid = "batch_" + uuid.uuid4().hex[:24]
            batch = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                     "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window"),
                     "status": "validating", "output_file_id": None, "error_file_id": None,
                     "created_at": int(time.time()), "metadata": body.get("metadata"), "polls": 0,
                     "total": len(out) + len(err), "failed": len(err), "results": (out, err),
                     "request_counts": {"total": len(out) + len(err), "completed": 0, "failed": 0}}
            with self._lock:
                self._batches[bid] = batch
            self._send_json(h, 200, self._openai_batch(batch))
        elif req.method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "batches"]:
            batch = self._batches.get(parts[2])
            if batch is None:
                self._send_json(h, 404, self.error_body(404, f"loopback: no batch {parts[2]}"))
                return True
            done, ended = self._batch_polled(batch)
            if ended and batch["status"] != "completed":
                files = self._files
                for name, rows in zip(("output_file_id", "error_file_id"), batch["results"]):
                    if rows:
                        fid = "file-" + uuid.uuid4().hex[:24]
                        files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                        batch[name] = fid
                batch.update(status="completed", completed_at=int(time.time()))
            elif not ended:
                batch["status"] = "in_progress"
            failed = batch["failed"] if ended else 0
            batch["request_counts"] = {"total": batch["total"], "completed": done - failed, "failed": failed}
            self._send_json(h, 200, self._openai_batch(batch))
        elif req.method == "GET" and len(parts) == 4 and parts[:2] == ["v1", "files"] and parts[3] == "content":
            data = self._files.get(parts[2])
            if data is None:
                self._send_json(h, 404, self.error_body(404, f"loopback: no file {parts[2]}"))
            else:
                h.send_bytes(200, "application/octet-stream", data)
        else:
            return False
        return True

    @staticmethod
    def _openai_batch(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k not in ("polls", "total", "failed", "results")}

    def _default_stream_events(self, sse: str, body: dict) -> list[str]:
        """Like the API: the usage chunk only with ``stream_options.include_usage``, the
        moderation chunk only with ``moderation`` (both have empty ``choices``)."""
        usage = bool((body.get("stream_options") or {}).get("include_usage")) and self.stream_usage
        keep = []
        for ev in sse_events(sse):
            data = ev.strip()[len("data:"):].strip()
            chunk = json.loads(data) if data != "[DONE]" else {"choices": [None]}
            if chunk["choices"] or (usage and chunk.get("usage")) or ("moderation" in body and "moderation" in chunk):
                keep.append(ev)
        return keep

    def error_body(self, status: int, message: str | None = None) -> dict:
        """``{"error": {"message", "type", "param", "code"}}`` as the OpenAI API sends it."""
        typ, code, msg = self._ERRORS.get(
            status, ("server_error", None, "The server had an error while processing your request. Sorry about that!")
        )
        return {"error": {"message": message or msg, "type": typ, "param": None, "code": code}}

    def _id_header(self) -> dict[str, str]:
        return {"x-request-id": "req_" + uuid.uuid4().hex}


class AnthropicServer(_LoopbackServer):
    """``/v1/messages`` and ``/v1/messages/count_tokens``; ``base_url`` is the bare root."""

    provider = "anthropic"
    env_var = "ANTHROPIC_BASE_URL"
    _endpoints = ("/v1/messages", "/v1/messages/count_tokens")
    _api_prefix = ""

    _ERRORS = {
        400: ("invalid_request_error", "Invalid request."),
        401: ("authentication_error", "invalid x-api-key"),
        403: ("permission_error", "Your API key does not have permission to use the specified resource."),
        404: ("not_found_error", "The requested resource could not be found."),
        413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
        529: ("overloaded_error", "Overloaded"),
    }

    def _serve_unscripted(self, h: _Handler, req: RecordedRequest) -> bool:
        """``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}`` and its ``results_url``
        (JSONL), as the Message Batches API documents them."""
        parts = req.path.strip("/").split("/")
        if parts[:3] != ["v1", "messages", "batches"]:
            return False
        batches = self._batches
        if req.method == "POST" and len(parts) == 3:
            body = req.body if isinstance(req.body, dict) else {}
            results = []
            for r in body.get("requests") or ():
                status, answer = self._batch_answer("/v1/messages", r.get("params") or {})
                result = {"type": "succeeded", "message": answer} if status == 200 else \
                    {"type": "errored", "error": {"type": "error", "error": answer["error"]}}
                results.append({"custom_id": r.get("custom_id"), "result": result})
            bid = "msgbatch_" + uuid.uuid4().hex[:24]
            batch = {"id": bid, "polls": 0, "total": len(results), "results": results,
                     "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ended_at": None}
            with self._lock:
                batches[bid] = batch
            self._send_json(h, 200, self._anthropic_batch(batch, 0, False))
        elif req.method == "GET" and len(parts) in (4, 5) and parts[3] in batches:
            batch = batches[parts[3]]
            if len(parts) == 5 and parts[4] == "results" and batch["ended_at"]:
                data = "".join(json.dumps(r) + "\n" for r in batch["results"]).encode()
                h.send_bytes(200, "application/binary", data, self._id_header())
            elif len(parts) == 4:
                done, ended = self._batch_polled(batch)
                if ended and not batch["ended_at"]:
                    batch["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                self._send_json(h, 200, self._anthropic_batch(batch, done, ended))
            else:
                self._send_json(h, 404, self.error_body(404))
        else:
            self._send_json(h, 404, self.error_body(404, f"loopback: no message batch {req.path}"))
        return True

    def _anthropic_batch(self, batch: dict, done: int, ended: bool) -> dict:
        errored = sum(r["result"]["type"] == "errored" for r in batch["results"]) if ended else 0
        return {"id": batch["id"], "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": {"processing": batch["total"] - done, "succeeded": done - errored,
                                   "errored": errored, "canceled": 0, "expired": 0},
                "ended_at": batch["ended_at"], "created_at": batch["created_at"],
                "expires_at": batch["created_at"], "archived_at": None, "cancel_initiated_at": None,
                "results_url": f"{self.url}/v1/messages/batches/{batch['id']}/results" if ended else None}

    def error_body(self, status: int, message: str | None = None) -> dict:
        """``{"type": "error", "error": {"type", "message"}, "request_id"}`` as Anthropic sends it."""
        typ, msg = self._ERRORS.get(status, ("api_error", "Internal server error"))
        return {
            "type": "error",
            "error": {"type": typ, "message": message or msg},
            "request_id": "req_" + uuid.uuid4().hex[:24],
        }

    def _id_header(self) -> dict[str, str]:
        return {"request-id": "req_" + uuid.uuid4().hex[:24]}


def _first_model(sse: str) -> str | None:
    """The ``model`` of the first SSE data payload that names one (chunk or message_start)."""
    for ev in sse_events(sse):
        for line in ev.splitlines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                data = json.loads(line[5:])
                model = data.get("model") or (data.get("message") or {}).get("model")
                if model:
                    return model
    return None


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body: name -> bytes."""
    from email.parser import BytesParser
    from email.policy import HTTP

    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    out: dict[str, bytes] = {}
    for part in msg.iter_parts() if msg.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = part.get_payload(decode=True) or b""
    return out


def _embeddings_default(out: dict, body: dict) -> dict:
    """One copy of the recorded vector per input, encoded as the request asked (float/base64)."""
    recorded = out["data"][0]["embedding"]
    if isinstance(recorded, str):
        raw = base64.b64decode(recorded)
        floats = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    else:
        floats = recorded
        raw = struct.pack(f"<{len(floats)}f", *floats)
    if body.get("encoding_format") == "base64":
        vector: Any = base64.b64encode(raw).decode()
    else:
        vector = floats
    inputs = body.get("input")
    n = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    out["data"] = [{"object": "embedding", "index": i, "embedding": vector} for i in range(n)]
    return out
