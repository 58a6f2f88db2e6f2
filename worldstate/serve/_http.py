"""A tiny asyncio HTTP/1.1 responder for a few GET routes (``/metrics``, ``/healthz``,
``/readyz``): ``asyncio.start_server``, one request per connection, bounded request size
and a deadline on every read and write. Enough for Prometheus and kubelet probes; not a
general web server (no keep-alive, no bodies, GET and HEAD only)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("worldstate.serve")

MAX_REQUEST_BYTES = 8192
IO_TIMEOUT = 5.0
"""Seconds a client gets to send its request head and to take the response."""

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
    400: "Bad Request",
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Awaitable[Response]]


class HttpEndpoint:
    """Serves ``routes`` (path → async handler) on ``host:port`` (port 0: any free one)."""

    def __init__(self, routes: Mapping[str, Handler], *, host: str, port: int) -> None:
        self.routes = dict(routes)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self.requests = 0

    async def start(self) -> int:
        """Listen; returns the bound port."""
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, reuse_address=True
        )
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(IO_TIMEOUT):
                    await self._server.wait_closed()
            self._server = None

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                response, head_only = await self._answer(head)
                writer.write(_encode(response, head_only))
                await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass  # a client that went away or never finished its request
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[Response, bool]:
        if len(head) > MAX_REQUEST_BYTES:
            return Response(400, b"request too large\n"), False
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return Response(400, b"bad request line\n"), False
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return Response(405, b"only GET and HEAD\n"), False
        handler = self.routes.get(path)
        if handler is None:
            known = " ".join(sorted(self.routes))
            return Response(404, f"no such path; try {known}\n".encode()), method == "HEAD"
        self.requests += 1
        try:
            return await handler(), method == "HEAD"
        except Exception:
            log.exception("GET %s failed", path)
            return Response(500, b"internal error (see the server log)\n"), method == "HEAD"


def _encode(r: Response, head_only: bool) -> bytes:
    reason = _REASONS.get(r.status, "OK")
    head = (
        f"HTTP/1.1 {r.status} {reason}\r\n"
        f"Content-Type: {r.content_type}\r\n"
        f"Content-Length: {len(r.body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + r.body
