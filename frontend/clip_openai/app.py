"""The ASGI application one uvicorn worker runs: OpenAI's embeddings and models routes, health.

    POST /v1/embeddings      the ensembles' embeddings of texts and images, OpenAI's request and answer
    GET  /v1/models          the CLIP models served, as OpenAI lists models
    GET  /v1/models/{id}
    GET  /health/live        the process answers
    GET  /health/ready       each model embeds a text in time (503 with the reason otherwise)

Each request is admitted or refused before its body is read (429 past settings.max_pending),
its body is read up to settings.max_body_bytes (413 past it), and whatever fails is answered
with OpenAI's error body: nothing one request sends reaches another request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import os
import time

import numpy as np
import orjson

from . import metrics
from .asgi import App, BodyTooLarge, Handler, NoRoute, Request, Response
from .errors import APIError, bad_request, model_not_found, saturated
from .images import resolve
from .request import EmbeddingsRequest, parse
from .settings import INSTANCE_VARIABLE, Settings
from .triton import Model, Triton

log = logging.getLogger("clip_openai")
OWNER = "clip-triton"  # OpenAI's model objects name an owner


def json_response(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status)


def error_response(exc: APIError) -> Response:
    return Response(exc.body(), exc.status, exc.headers)


def model_object(model: Model) -> dict:
    return {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": OWNER,
        # beyond OpenAI's fields: what a client of embeddings wants to know
        "dimensions": model.dim,
        "modalities": model.modalities,
        "checkpoint": model.checkpoint,
        "weights": model.weights,
    }


def embeddings_body(request_model: str, vectors: np.ndarray, encoding_format: str, tokens: int) -> dict:
    if encoding_format == "base64":  # OpenAI's: the float32 values' little-endian bytes
        little = np.ascontiguousarray(vectors, dtype="<f4")
        rows = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    else:
        rows = list(np.ascontiguousarray(vectors, dtype=np.float32))
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
        "model": request_model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class Frontend:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.triton: Triton | None = None
        self.pending = 0
        self.instance = os.environ.get(INSTANCE_VARIABLE, "")

    @contextlib.asynccontextmanager
    async def lifespan(self):
        self.triton = Triton(self.settings)
        try:
            async with metrics.flushing(lambda: self.pending):
                yield
        finally:
            await self.triton.close()

    def authorize(self, request: Request) -> None:
        if not self.settings.api_key:
            return
        scheme, _, key = (request.header(b"authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' (the OpenAI SDK's api_key)",
                code="missing_api_key",
            )
        if not hmac.compare_digest(key.strip().encode(), self.settings.api_key.encode()):
            raise APIError(401, "Incorrect API key provided", code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        try:
            return await request.body(limit)
        except BodyTooLarge:
            raise APIError(413, f"the request body is over {limit} bytes", code="request_too_large") from None

    # -- routes -----------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        started = time.perf_counter()
        if self.pending >= self.settings.max_pending:
            metrics.TALLY.count(metrics.REJECTED)
            raise saturated(f"{self.pending} requests pending in this worker")
        self.pending += 1
        try:
            self.authorize(request)
            asked = parse(
                await self.read_body(request),
                self.settings.max_inputs,
                self.settings.normalize,
                self.settings.traffic,
                self.settings.max_images,
            )
            assert self.triton is not None
            model = await self.triton.model(asked.model)
            if model is None:
                raise model_not_found(asked.model)
            if asked.dimensions is not None and asked.dimensions != model.dim:
                raise bad_request(
                    f"model `{model.name}` has {model.dim} dimensions and cannot return {asked.dimensions}; "
                    f"send dimensions={model.dim} or leave it out",
                    param="dimensions",
                )
            if asked.images and not model.image:
                raise bad_request(
                    f"model `{model.name}` embeds texts only (it was built from a checkpoint without a vision "
                    "tower), and input holds images",
                    param="input",
                )
            vectors, tokens = await self.embed(model, asked)
            if asked.normalize:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            tally = metrics.TALLY
            if asked.texts:
                tally.count(metrics.TEXTS, model.name, amount=len(asked.texts))
                tally.count(metrics.PROMPT_TOKENS, model.name, amount=tokens)
            if asked.images:
                tally.count(metrics.IMAGES, model.name, amount=len(asked.images))
            response = json_response(embeddings_body(asked.model, vectors, asked.encoding_format, tokens))
            tally.observe(metrics.LATENCY, time.perf_counter() - started)
            tally.count(metrics.REQUESTS, "/v1/embeddings", "200")
            return response
        finally:
            self.pending -= 1

    async def embed(self, model: Model, asked: EmbeddingsRequest) -> tuple[np.ndarray, int]:
        """Every input's vector in input order, and the texts' tokens: texts through the text
        ensemble, images (fetched first where they are URLs) through the image one, at once."""
        triton = self.triton
        assert triton is not None
        if not asked.images:
            waited = time.perf_counter()
            vectors, tokens = await triton.embed(model, asked.texts, asked.traffic)
            metrics.TALLY.observe(metrics.TRITON_LATENCY, time.perf_counter() - waited)
            return vectors, tokens
        settings = self.settings
        files = await resolve(
            list(asked.images), settings.image_url_hosts, settings.image_url_timeout_s, settings.image_url_max_bytes
        )
        waited = time.perf_counter()
        image_rows, text_rows = [image.index for image in asked.images], asked.text_rows()
        images = triton.embed_images(model, files, image_rows, asked.traffic)
        if not asked.texts:
            vectors, tokens = await images, 0
        else:

            async def texts() -> tuple[np.ndarray, int]:
                try:
                    return await triton.embed(model, asked.texts, asked.traffic)
                except APIError as exc:  # it names a text by its place among the texts
                    raise exc.renumbered(text_rows) from None

            (text_vectors, tokens), image_vectors = await asyncio.gather(texts(), images)
            vectors = np.empty((asked.size, model.dim), dtype=np.float32)
            vectors[text_rows], vectors[image_rows] = text_vectors, image_vectors
        metrics.TALLY.observe(metrics.TRITON_LATENCY, time.perf_counter() - waited)
        return vectors, tokens

    async def list_models(self, request: Request) -> Response:
        self.authorize(request)
        assert self.triton is not None
        models = await self.triton.models(refresh=True)
        return json_response({"object": "list", "data": [model_object(m) for m in models.values()]})

    async def get_model(self, request: Request) -> Response:
        self.authorize(request)
        assert self.triton is not None
        name = request.param
        model = await self.triton.model(name)
        if model is None:
            raise model_not_found(name)
        return json_response(model_object(model))

    async def live(self, request: Request) -> Response:
        return json_response({"status": "live", "instance": self.instance})

    async def ready(self, request: Request) -> Response:
        assert self.triton is not None
        reason = await self.triton.not_ready()
        if reason:
            return json_response({"status": "not ready", "reason": reason, "instance": self.instance}, 503)
        return json_response({"status": "ready", "instance": self.instance})


def on_error(request: Request, exc: BaseException) -> Response:
    """The answer to whatever a route raised: OpenAI's error body, always."""
    if isinstance(exc, NoRoute):
        message = f"{request.method} {request.path}: " + ("Not Found" if exc.status == 404 else "Method Not Allowed")
        headers = {"allow": ", ".join(exc.allowed)} if exc.allowed else None
        exc = APIError(exc.status, message, code="unknown_url" if exc.status == 404 else None, headers=headers)
    elif not isinstance(exc, APIError):
        log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
        return error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error"))
    metrics.TALLY.count(metrics.REQUESTS, request.route, str(exc.status))
    return error_response(exc)


def create_app(settings: Settings | None = None) -> App:
    frontend = Frontend(settings or Settings.from_env())
    routes: dict[str, dict[str, Handler]] = {
        "/v1/embeddings": {"POST": frontend.embeddings},
        "/v1/models": {"GET": frontend.list_models},
        "/health/live": {"GET": frontend.live},
        "/health/ready": {"GET": frontend.ready},
    }
    prefixed: dict[str, dict[str, Handler]] = {"/v1/models/": {"GET": frontend.get_model}}
    return App(routes, prefixed, on_error, frontend.lifespan)
