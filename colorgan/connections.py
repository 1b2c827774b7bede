"""Guards on `colorgan serve`'s connections, in uvicorn's h11 protocol.

Connections are guarded in uvicorn's h11 protocol (`_protocol_class`): a request's headers must
arrive within `header_timeout` seconds and its body within `body_timeout` more, else 408 and the
connection is closed; at most `max_connections` are open (fewer under a low file limit): a new
one closes the one that has waited longest for a request's headers (a stalled or idle client),
or, when every one is busy with a request, is answered 503.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from colorgan.errors import ColorganError, MissingDependency

INSTALL_HINT = "pip install 'colorgan[serve]'"
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a request's headers, from connecting or the last answer
DEFAULT_BODY_TIMEOUT = 30.0  # seconds for a request's body, from the end of its headers
DEFAULT_MAX_CONNECTIONS = 64  # open connections at once
_SPARE_FILES = 64  # file descriptors kept free of connections (model, selector, logs...)


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take to send a request, and how many may be connected at once."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def connections_from_options(
    header_timeout: float, body_timeout: float, max_connections: int
) -> ConnectionLimits:
    """ConnectionLimits from `--header-timeout`, `--body-timeout` and `--max-connections`."""
    for name, value in (("--header-timeout", header_timeout), ("--body-timeout", body_timeout)):
        if not (math.isfinite(value) and 0 < value <= 3600):
            raise ColorganError(
                f"{name} must be a number of seconds above 0 and at most 3600, got {value:g}"
            )
    if not 1 <= max_connections <= 100_000:
        raise ColorganError(f"--max-connections must be from 1 to 100000, got {max_connections}")
    return ConnectionLimits(header_timeout, body_timeout, max_connections)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ColorganError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """The http:// address a listening socket answers on."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"


def _raw_error(status: int, reason: str) -> bytes:
    """A whole JSON error response that closes the connection, for the protocol to write."""
    body = json.dumps({"error": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app a connection over the cap gets: 503, JSON, connection closed."""
    body = json.dumps({"error": "too many open connections; try again shortly"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(b"connection", b"close"), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Deadline:
    """One connection's clock: the request's headers must arrive within header_timeout (from
    connecting, or from the previous answer on a kept-alive connection), and its body within
    body_timeout of them. Nothing runs while the app works on a request."""

    def __init__(self, protocol: Any, limits: ConnectionLimits) -> None:
        self.protocol = protocol  # a uvicorn H11Protocol
        self.limits = limits
        self.phase: str | None = None  # "headers", "body" or None (nothing awaited from it)
        self.since = 0.0  # loop time the phase began
        self.timer: asyncio.TimerHandle | None = None

    def update(self) -> None:
        """Start the clock for what the connection now waits for (after every event)."""
        import h11

        state = self.protocol.conn.their_state
        phase = {h11.IDLE: "headers", h11.SEND_BODY: "body"}.get(state)
        if phase == self.phase:
            return
        self.cancel()
        self.phase = phase
        if phase is not None and not self.protocol.transport.is_closing():
            limit = self.limits.header_timeout if phase == "headers" else self.limits.body_timeout
            self.since = self.protocol.loop.time()
            self.timer = self.protocol.loop.call_later(limit, self.expire, f"within {limit:g} s")

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self, within: str) -> None:
        """Close the connection: with a 408 if a request was begun and not yet answered.
        `within` ends the reason: "within 10 s", or why it could wait no longer."""
        self.cancel()
        protocol = self.protocol
        if protocol.transport.is_closing():
            return
        begun = self.phase == "headers" and protocol.conn.trailing_data[0]
        if begun or (self.phase == "body" and not protocol.cycle.response_started):
            part = "headers" if self.phase == "headers" else "body"
            reason = f"the request's {part} did not arrive {within}"
            protocol.transport.write(_raw_error(408, reason))
        protocol.transport.close()


def _admit(protocol: Any, cap: int) -> None:
    """Over the cap, close the connection that has waited longest for a request's headers (a
    stalled client or an idle kept-alive one); if every one is busy, this one is answered 503."""
    others = [p for p in protocol.connections if p is not protocol and not p.transport.is_closing()]
    if len(others) < cap:
        return
    waiting = [p for p in others if getattr(p, "deadline", None) and p.deadline.phase == "headers"]
    if waiting:
        min(waiting, key=lambda p: p.deadline.since).deadline.expire(
            "before other clients needed its place"
        )
    else:
        protocol.app = _busy


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered so that connections cannot use up the process's file descriptors (when
    accept() fails for want of one, everyone waits)."""
    try:
        import resource
    except ImportError:  # Windows
        return wanted
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - _SPARE_FILES))


def _protocol_class(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the deadlines, the connection cap and JSON for its own 400."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    cap = connection_cap(limits.max_connections)

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.deadline = _Deadline(self, limits)
            _admit(self, cap)
            self.deadline.update()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.deadline.update()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.deadline.update()

        def connection_lost(self, exc: Exception | None) -> None:
            self.deadline.cancel()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_raw_error(400, f"malformed HTTP request ({msg})"))
            self.transport.close()

    return GuardedH11Protocol


def server(app: Any, sock: socket.socket, connections: ConnectionLimits | None = None) -> Any:
    """A uvicorn Server for `app` on the already-bound `sock` (call .run(sockets=[sock])), its
    connections guarded by `connections` (the defaults when None)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependency(
            f"colorgan serve needs starlette and uvicorn: {INSTALL_HINT}"
        ) from None
    host, port = sock.getsockname()[:2]
    protocol = _protocol_class(connections or ConnectionLimits())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        ws="none",  # no WebSocket routes: an upgrade request stays an HTTP request (guarded)
        log_level="warning",
        access_log=False,
    )
    return uvicorn.Server(config)
