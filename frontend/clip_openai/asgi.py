"""The HTTP layer under the frontend's routes (app.py): ASGI as uvicorn speaks it, with no web
framework in between.

Every request to /v1/embeddings passes through here, so this layer does only what the routes need:
it finds the handler by the path (a dict lookup, or one prefix for a path with an id in it), reads
the body in chunks against a limit, and sends one response of bytes. A framework's request and
response objects, middleware stack and route patterns do more on every request than this, and the
frontend's CPU per request is what bounds how many requests one worker answers.

A handler returns a Response or raises; `on_error` turns what it raises into the response the
client gets. A client that goes away while its body is being read gets nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


class Disconnected(Exception):
    """The client closed its connection before its body was read."""


class BodyTooLarge(Exception):
    """The body is over the limit the route reads it with."""


class NoRoute(Exception):
    """No route has this path (status 404), or none takes this method there (405, `allowed`)."""

    def __init__(self, status: int, allowed: tuple[str, ...] = ()):
        super().__init__(status)
        self.status, self.allowed = status, allowed


class Request:
    __slots__ = ("scope", "_receive", "method", "path", "route", "param")

    def __init__(self, scope: dict, receive: Callable[[], Awaitable[dict]]):
        self.scope, self._receive = scope, receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.route = "other"  # the route it was found on, for metrics: never the raw path, unbounded
        self.param = ""  # a prefix route's rest of the path: /v1/models/{param}

    def header(self, name: bytes) -> str | None:
        """The first value of header `name` (lower case, as ASGI gives names), or None."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return None

    async def body(self, limit: int) -> bytes:
        """The whole body; BodyTooLarge as soon as a declared length or the bytes read pass `limit`."""
        declared = self.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge
        chunks, size = [], 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass
class Response:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, send: Callable[[dict], Awaitable[None]]) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


Handler = Callable[[Request], Awaitable[Response]]


class App:
    """An ASGI application: `routes` maps a path to its handlers by method; a path in `prefixed`
    that ends in "/" takes every path under it, the rest given to the handler as request.param.
    `lifespan` is entered before the first request and left at shutdown."""

    def __init__(
        self,
        routes: dict[str, dict[str, Handler]],
        prefixed: dict[str, dict[str, Handler]],
        on_error: Callable[[Request, BaseException], Response],
        lifespan: Callable[[], contextlib.AbstractAsyncContextManager],
    ):
        self.routes, self.prefixed, self.on_error, self.lifespan = routes, prefixed, on_error, lifespan

    def find(self, request: Request) -> Handler:
        """The handler of the request's path and method; sets its route (and param)."""
        path = request.path
        handlers = self.routes.get(path)
        if handlers is not None:
            request.route = path
        else:
            for prefix, under in self.prefixed.items():
                if path.startswith(prefix) and len(path) > len(prefix):
                    handlers, request.route, request.param = under, prefix + "{id}", path[len(prefix) :]
                    break
            else:
                raise NoRoute(404)
        handler = handlers.get(request.method)
        if handler is None:
            raise NoRoute(405, tuple(handlers))
        return handler

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.run_lifespan(receive, send)

    async def http(self, scope: dict, receive, send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.find(request)(request)
        except Disconnected:
            return
        except Exception as exc:
            response = self.on_error(request, exc)
        await response.send(send)

    async def run_lifespan(self, receive, send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with self.lifespan():
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                assert message["type"] == "lifespan.shutdown"
        except BaseException as exc:
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                return
            raise
        await send({"type": "lifespan.shutdown.complete"})
