"""uvicorn's HTTP protocols, answering requests they cannot parse with JSON, with a deadline
for incomplete requests.

A request that is not valid HTTP (a malformed request line or header, headers over the size
limit) never reaches the app: uvicorn answers it itself, with a plain-text 400. The classes here
give the same answer in the API's error shape, ``{"error": "bad_request", "detail": ...}``, so
every error a client of ``alignrec serve`` can get is JSON. :func:`http_protocol` picks the one
that matches uvicorn's own choice (httptools when installed, h11 otherwise).

uvicorn times out idle keep-alive connections only after a response: a connection that sends
nothing, or half a request, is held forever (hundreds of them exhaust the server). Here a
request must arrive whole — headers and body — within ``request_timeout_s`` of its first byte
(of the connection, for the first request), or the connection is closed.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_REQUEST_TIMEOUT_S = 10.0


def bad_request_body(message: str) -> bytes:
    return json.dumps({"error": "bad_request", "detail": message}).encode("utf-8")


class RequestDeadline:
    """Mixin for uvicorn's HTTP protocols: close a connection whose request is not complete
    ``request_timeout_s`` after it began. A request the app is answering is never cut short
    (uvicorn's keep-alive timeout takes over once the response is sent)."""

    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    cycle: Any
    transport: Any
    loop: asyncio.AbstractEventLoop

    def __init__(self, *args: Any, request_timeout_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if request_timeout_s is not None:
            self.request_timeout_s = request_timeout_s
        self._request_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_request_deadline()

    def data_received(self, data: bytes) -> None:
        if self._request_deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_request_deadline()  # the first bytes of the next request on this connection
        super().data_received(data)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        self._disarm_request_deadline()
        super().on_response_complete()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_request_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_request_deadline(self) -> None:
        self._request_deadline = self.loop.call_later(self.request_timeout_s, self._request_timed_out)

    def _disarm_request_deadline(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _request_timed_out(self) -> None:
        self._request_deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            return  # the request is whole and the app is answering it
        if not self.transport.is_closing():
            self.transport.close()  # the app, if it was reading the body, sees a disconnect


class JSONErrorsH11Protocol(RequestDeadline, H11Protocol):
    """uvicorn's h11 protocol; its 400 for an unparseable request is JSON."""

    def send_400_response(self, msg: str) -> None:
        body = bad_request_body(msg)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency, kept optional as in uvicorn
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

if HttpToolsProtocol is not None:

    class JSONErrorsHttpToolsProtocol(RequestDeadline, HttpToolsProtocol):  # type: ignore[valid-type,misc]
        """uvicorn's httptools protocol; its 400 for an unparseable request is JSON."""

        def send_400_response(self, msg: str) -> None:
            body = bad_request_body(msg)
            content = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]
            )
            self.transport.write(b"".join(content))
            self.transport.close()


def http_protocol(request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S, implementation: str = "auto") -> Callable[..., asyncio.Protocol]:
    """The protocol for ``uvicorn.run(http=...)``: httptools' when installed, like uvicorn's
    ``auto`` (or ``implementation`` "h11" / "httptools"), with the incomplete-request deadline
    (a partial of a module-level class: worker processes can unpickle it)."""
    use_httptools = implementation == "httptools" or (implementation == "auto" and HttpToolsProtocol is not None)
    protocol = JSONErrorsHttpToolsProtocol if use_httptools else JSONErrorsH11Protocol
    return functools.partial(protocol, request_timeout_s=request_timeout_s)
