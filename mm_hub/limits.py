"""What one request to the app may cost, enforced: the bytes of its body, and the memory it leaves behind.

- `BodySizeLimit` refuses a request body over its route's limit with HTTP 413, from ``Content-Length`` when the
  client sends one and by counting the bytes as they arrive otherwise (chunked bodies), before the route parses it.
  Gradio limits file uploads (``max_file_size``) but reads any other body whole: a 100 MB text in a
  ``/call/classify`` body was parsed and kept.
- `release_memory` hands the memory a request freed back to the system. glibc keeps freed blocks in each thread's
  arena for reuse; after decoding a large image in a server thread, hundreds of megabytes stayed resident for good.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# Any body but a file upload: an endpoint's JSON (texts of at most 1,000 characters, file references, numbers).
MAX_BODY_BYTES = 1_000_000
# Multipart framing around one upload of the app's largest file (``max_file_size``) is far below this margin.
UPLOAD_MARGIN_BYTES = 1_000_000


class BodyTooLarge(HTTPException):
    """Raised inside `BodySizeLimit` when a body grows past its limit while it is read: an HTTP error, so that the
    routes that parse bodies pass it on (they turn other exceptions into a 400) and the answer is a 413."""

    def __init__(self, limit: int):
        super().__init__(413, _message(limit))


class BodySizeLimit:
    """ASGI middleware: a request body larger than its limit gets ``413 Payload Too Large`` and is not read further.

    Args:
        app: the ASGI application it wraps.
        max_body_bytes: the limit of every route but uploads.
        max_upload_bytes: the limit of paths ending in ``/upload`` (Gradio's upload routes), which check each file
            against the app's ``max_file_size`` themselves.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES, max_upload_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit(self, path: str) -> int:
        """The most bytes a body sent to ``path`` may hold."""
        return self.max_upload_bytes if path.rstrip("/").endswith("/upload") else self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, limit)
            return
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await _refuse(send, limit)


def _message(limit: int) -> str:
    return f"The request body is larger than {limit:,} bytes, the limit of this route."


async def _refuse(send: Callable[[Message], Awaitable[None]], limit: int) -> None:
    body = json.dumps({"detail": _message(limit)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on a C library without it (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_memory() -> bool:
    """Return the heap memory freed so far to the operating system (glibc's ``malloc_trim(0)``, which trims every
    thread's arena); a few milliseconds. Returns False where the C library cannot (nothing to do there)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def releasing_memory(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a request handler (a function or a generator function) so that `release_memory` runs when it ends,
    however it ends."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            finally:
                release_memory()

        return generator

    @functools.wraps(fn)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            release_memory()

    return function


__all__ = ["MAX_BODY_BYTES", "UPLOAD_MARGIN_BYTES", "BodySizeLimit", "release_memory", "releasing_memory"]
