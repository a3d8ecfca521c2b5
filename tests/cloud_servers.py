"""Loopback servers for the cloud variants, speaking their wire formats through the official
SDK clients: Azure OpenAI (``/openai/deployments/{deployment}/chat/completions?api-version=``,
the ``api-key`` header), Anthropic on Bedrock (``/model/{model}/invoke`` and
``/invoke-with-response-stream`` as AWS's binary event stream, SigV4 or bearer auth) and on
Vertex (``/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:rawPredict`` and
``:streamRawPredict``, bearer auth). Each maps its path to the API's and answers with the recorded
traffic, keeping the path it was asked (``RecordedRequest.original_path``)."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib

from loopback import AnthropicServer, OpenAIServer, RecordedRequest, _Handler, sse_events

__all__ = ["AzureServer", "BedrockServer", "VertexServer", "event_stream_frame"]


def _refuse(server, h: _Handler, req: RecordedRequest, status: int, body: dict) -> None:
    """Record a request the cloud's routes do not take and answer ``status`` (its path unmapped)."""
    req.original_path = req.path
    with server._lock:
        server.requests.append(req)
    server._send_json(h, status, body)


class AzureServer(OpenAIServer):
    """Azure OpenAI: deployments in the path, ``api-version`` in the query, the key in ``api-key``."""

    _PATH = re.compile(r"/openai/deployments/([^/]+)(/chat/completions|/embeddings)$")

    @property
    def base_url(self) -> str:  # AZURE_OPENAI_ENDPOINT: the resource root
        return self.url

    def _dispatch(self, h: _Handler, req: RecordedRequest) -> None:
        m = self._PATH.match(req.path)
        if m is None or "api-version=" not in req.query:
            return _refuse(self, h, req, 404, self.error_body(404, f"loopback azure: no route {req.path}?{req.query}"))
        if "api-key" not in req.headers:
            return _refuse(self, h, req, 401, self.error_body(401, "Access denied due to missing subscription key."))
        req.original_path, req.path = req.path, "/v1" + m.group(2)
        if isinstance(req.body, dict):
            req.body.setdefault("model", m.group(1))
        super()._dispatch(h, req)


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v  # type 7: string


def event_stream_frame(payload: bytes, event_type: str = "chunk") -> bytes:
    """One message of AWS's event stream encoding (prelude, CRCs, string headers, payload)."""
    headers = _header(":event-type", event_type) + _header(":content-type", "application/json") + \
        _header(":message-type", "event")
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


class BedrockServer(AnthropicServer):
    """Bedrock runtime: ``POST /model/{model}/invoke`` (JSON) and ``/invoke-with-response-stream``
    (each Messages event as an event-stream ``chunk`` holding the event's JSON, base64)."""

    _PATH = re.compile(r"/model/([^/]+)/(invoke|invoke-with-response-stream)$")

    def _dispatch(self, h: _Handler, req: RecordedRequest) -> None:
        m = self._PATH.match(req.path)
        if m is None:
            return _refuse(self, h, req, 404, {"message": f"loopback bedrock: no route {req.path}"})
        from urllib.parse import unquote

        req.original_path, req.path = req.path, "/v1/messages"
        if isinstance(req.body, dict):  # the SDK moved model and stream into the path
            req.body = {**req.body, "model": unquote(m.group(1)), "stream": m.group(2) != "invoke"}
        super()._dispatch(h, req)

    def _serve_default(self, h: _Handler, req: RecordedRequest) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        if not body.get("stream"):
            return super()._serve_default(h, req)
        entry = self._defaults[("/v1/messages", True)]
        frames = []
        for ev in sse_events(entry["response"]["sse"]):
            data = "".join(line[5:].strip() for line in ev.splitlines() if line.startswith("data:"))
            event = json.loads(data)
            if event.get("type") == "message_start" and body.get("model"):
                event["message"]["model"] = body["model"]
            frames.append(event_stream_frame(json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
                                             .encode()))
        h.send_bytes(200, "application/vnd.amazon.eventstream", b"".join(frames), self._id_header())


class VertexServer(AnthropicServer):
    """Vertex AI: ``POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:rawPredict``
    (``:streamRawPredict`` for SSE), a bearer token."""

    _PATH = re.compile(r"/v1/projects/([^/]+)/locations/([^/]+)/publishers/anthropic/models/([^/:]+)"
                       r":(rawPredict|streamRawPredict)$")

    @property
    def base_url(self) -> str:  # ANTHROPIC_VERTEX_BASE_URL: the API root with its version
        return self.url + "/v1"

    def _dispatch(self, h: _Handler, req: RecordedRequest) -> None:
        m = self._PATH.match(req.path)
        if m is None:
            return _refuse(self, h, req, 404, self.error_body(404, f"loopback vertex: no route {req.path}"))
        req.original_path, req.path = req.path, "/v1/messages"
        if isinstance(req.body, dict):
            req.body = {**req.body, "model": m.group(3), "stream": m.group(4) == "streamRawPredict"}
        super()._dispatch(h, req)
