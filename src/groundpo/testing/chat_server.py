"""A small scripted OpenAI-compatible chat server for offline tests of the data pipelines.

It is a real HTTP server (``http.server`` on 127.0.0.1, one thread per connection) that speaks
``POST /v1/chat/completions`` the way the OpenAI API and vLLM do, so clients go through their whole
stack: the ``openai`` client, HTTP, JSON, retries. What it answers is a Python function of the
request body (the *script*); the script may also return a :class:`Fault` (an HTTP error such as
429 with ``Retry-After``, or a 500) to exercise retries.

It checks what it receives: a request without ``model`` or ``messages``, with an unknown content
part, or with media that is not valid base64 gets HTTP 400, as a strict server would. Every
request is recorded (``requests``), with its ``Authorization`` header (``auth``).

``hold_after(n)`` makes every request after the n-th wait until :meth:`release` (``held`` tells
how many wait): a test can kill a client while requests are in flight without any timing.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

PART_TYPES = {"text", "image_url", "input_audio", "video_url", "audio_url"}


@dataclass
class Fault:
    status: int
    message: str = "scripted fault"
    retry_after: float | None = None


Script = Callable[[dict[str, Any]], "str | Fault"]


def message_text(body: dict[str, Any]) -> str:
    """All text of a request's messages, in order."""
    out = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(out)


def media_parts(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The content parts of type ``kind`` (``image_url``, ``input_audio``) of a request."""
    return [
        p for m in body.get("messages", []) if isinstance(m.get("content"), list)
        for p in m["content"] if isinstance(p, dict) and p.get("type") == kind
    ]


def decoded_media(part: dict[str, Any]) -> bytes:
    """The bytes of an inline ``image_url``, ``audio_url`` (data URLs) or ``input_audio`` part."""
    if part["type"] in ("image_url", "audio_url"):
        url = part[part["type"]]["url"]
        if not url.startswith("data:") or ";base64," not in url:
            raise ValueError("not a base64 data URL")
        return base64.b64decode(url.split(",", 1)[1], validate=True)
    return base64.b64decode(part["input_audio"]["data"], validate=True)


def schema_name(body: dict[str, Any]) -> str | None:
    """The ``json_schema`` name a request asks for (``response_format``), if any."""
    fmt = body.get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("name") if fmt.get("type") == "json_schema" else None


def _problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for message in messages:
        if message.get("role") not in ("system", "user", "assistant"):
            return f"unknown role {message.get('role')!r}"
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") not in PART_TYPES:
                    return f"unknown content part type {part.get('type')!r}"
                if part["type"] in ("image_url", "input_audio", "audio_url"):
                    try:
                        decoded_media(part)
                    except (KeyError, IndexError, binascii.Error, ValueError):
                        return f"{part['type']} part is not valid base64 media"
        elif not isinstance(content, str):
            return "message content must be text or a list of parts"
    return None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # a client killed mid-request is expected in tests
        pass


class ScriptedChatServer:
    def __init__(self, script: Script, model: str = "scripted", report_usage: bool = True) -> None:
        self.script = script
        self.model = model
        self.report_usage = report_usage
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self._lock = threading.Lock()
        self._hold_after: int | None = None
        self._gate = threading.Event()
        self._gate.set()
        self.held = 0
        self._held_event = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def hold_after(self, n: int) -> None:
        """Requests after the n-th wait for :meth:`release`."""
        with self._lock:
            self._hold_after = len(self.requests) + n
            self._gate.clear()
            self._held_event.clear()

    def wait_until_held(self, timeout: float = 120.0) -> bool:
        return self._held_event.wait(timeout)

    def release(self) -> None:
        with self._lock:
            self._hold_after = None
        self._gate.set()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                problem = _problem(body)
                if problem:
                    self._send(400, {"error": {"message": problem, "type": "invalid_request_error"}})
                    return
                with server._lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    hold = server._hold_after is not None and len(server.requests) > server._hold_after
                    if hold:
                        server.held += 1
                        server._held_event.set()
                if hold:
                    server._gate.wait()
                answer = server.script(body)
                if isinstance(answer, Fault):
                    headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else None
                    self._send(answer.status, {"error": {"message": answer.message}}, headers)
                    return
                prompt_tokens = max(1, len(message_text(body)) // 4)
                completion_tokens = max(1, len(answer) // 4)
                payload = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                }
                if server.report_usage:
                    payload["usage"] = {
                        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    }
                self._send(200, payload)

        return Handler
