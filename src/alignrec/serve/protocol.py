"""uvicorn's HTTP protocols, answering requests they cannot parse with JSON.

A request that is not valid HTTP (a malformed request line or header, headers over the size
limit) never reaches the app: uvicorn answers it itself, with a plain-text 400. The classes here
give the same answer in the API's error shape, ``{"error": "bad_request", "detail": ...}``, so
every error a client of ``alignrec serve`` can get is JSON. :func:`http_protocol` picks the one
that matches uvicorn's own choice (httptools when installed, h11 otherwise).
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def bad_request_body(message: str) -> bytes:
    return json.dumps({"error": "bad_request", "detail": message}).encode("utf-8")


class JSONErrorsH11Protocol(H11Protocol):
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

    class JSONErrorsHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[valid-type,misc]
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


def http_protocol() -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.run(http=...)``: httptools' when installed, like uvicorn's ``auto``."""
    if HttpToolsProtocol is not None:
        return JSONErrorsHttpToolsProtocol
    return JSONErrorsH11Protocol
