"""The frontend's HTTP layer (clip_openai.asgi) in-process, spoken to in ASGI messages as uvicorn
speaks them: routes found by path and method, bodies read in chunks against a limit, a client
that leaves mid-body answered with nothing, and the lifespan entered and left around requests.
tests/integration/test_openai.py runs it under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from clip_openai.asgi import App, Disconnected, NoRoute, Request, Response


def scope(method: str, path: str, headers: dict[str, str] | None = None) -> dict:
    encoded = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "method": method, "path": path, "headers": encoded}


def receiver(*messages: dict):
    queue = list(messages)

    async def receive() -> dict:
        return queue.pop(0)

    return receive


def call(app: App, method: str, path: str, *messages: dict, headers: dict[str, str] | None = None) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    body = messages or ({"type": "http.request", "body": b""},)
    asyncio.run(app(scope(method, path, headers), receiver(*body), send))
    return sent


def answered(sent: list[dict]) -> tuple[int, dict[str, str], bytes]:
    start, body = sent
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]


def errors_as_text(request: Request, exc: BaseException) -> Response:
    if isinstance(exc, NoRoute):
        return Response(f"{exc.status} {','.join(exc.allowed)}".encode(), exc.status)
    return Response(f"{type(exc).__name__} on {request.route}".encode(), 500)


@contextlib.asynccontextmanager
async def nothing():
    yield


def echo_app(limit: int = 10, lifespan=nothing) -> App:
    async def echo(request: Request) -> Response:
        return Response(await request.body(limit), headers={"x-route": request.route})

    async def model(request: Request) -> Response:
        return Response(request.param.encode())

    return App({"/echo": {"POST": echo}}, {"/models/": {"GET": model}}, errors_as_text, lifespan)


def test_a_path_reaches_its_handler_and_the_rest_of_a_prefixed_path_is_its_param():
    status, headers, body = answered(call(echo_app(), "POST", "/echo", {"type": "http.request", "body": b"hi"}))
    assert (status, body, headers["content-length"], headers["x-route"]) == (200, b"hi", "2", "/echo")
    assert answered(call(echo_app(), "GET", "/models/org/name"))[2] == b"org/name"


def test_an_unknown_path_is_a_404_and_a_wrong_method_a_405_naming_the_methods_allowed():
    status, _, body = answered(call(echo_app(), "GET", "/nowhere"))
    assert (status, body) == (404, b"404 ")
    assert answered(call(echo_app(), "GET", "/models/"))[0] == 404
    status, _, body = answered(call(echo_app(), "GET", "/echo"))
    assert (status, body) == (405, b"405 POST")


def test_a_body_in_chunks_is_read_whole_and_one_over_the_limit_is_refused_declared_or_streamed():
    chunks = [{"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.request", "body": b"def"}]
    assert answered(call(echo_app(), "POST", "/echo", *chunks))[2] == b"abcdef"
    over = [{"type": "http.request", "body": b"x" * 6, "more_body": True}, {"type": "http.request", "body": b"y" * 6}]
    assert answered(call(echo_app(), "POST", "/echo", *over))[2] == b"BodyTooLarge on /echo"
    declared = call(
        echo_app(), "POST", "/echo", {"type": "http.request", "body": b"x"}, headers={"content-length": "11"}
    )
    assert answered(declared)[2] == b"BodyTooLarge on /echo"


def test_a_client_that_leaves_mid_body_is_sent_nothing():
    gone = [{"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"}]
    assert call(echo_app(), "POST", "/echo", *gone) == []
    with pytest.raises(Disconnected):
        asyncio.run(Request(scope("POST", "/echo"), receiver({"type": "http.disconnect"})).body(10))


def lifespan_of(app: App) -> list[str]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    startup, shutdown = {"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}
    asyncio.run(app({"type": "lifespan"}, receiver(startup, shutdown), send))
    return [m["type"] for m in sent]


def test_the_lifespan_is_entered_at_startup_and_left_at_shutdown_and_a_failed_start_says_so():
    steps: list[str] = []

    @contextlib.asynccontextmanager
    async def recorded():
        steps.append("entered")
        yield
        steps.append("left")

    assert lifespan_of(echo_app(lifespan=recorded)) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert steps == ["entered", "left"]

    @contextlib.asynccontextmanager
    async def failing():
        raise RuntimeError("no channel to Triton")
        yield

    assert lifespan_of(echo_app(lifespan=failing)) == ["lifespan.startup.failed"]
