"""The ensemble over Triton's gRPC API, from asyncio: one worker's channels, its catalog of
models, and the calls that carry its requests' texts.

Requests to one model share calls: at most settings.calls_in_flight are in flight per model, and
the requests that arrive meanwhile go out together in the next one, up to the ensemble's
max_batch_size texts. A call Triton refuses for its content is sent again request by request, so
one request's bad text fails only that request.

Requests are built from Triton's own protobuf messages (tritonclient.grpc.service_pb2) with the
texts in `raw_input_contents` and read back from `raw_output_contents` as numpy views: no
per-tensor Python objects between the HTTP body and the gRPC call. The ensemble's TOKEN_COUNT
output (its tokenizer's count of each text's tokens) comes back beside EMBEDDING for
usage.prompt_tokens.

A checkpoint built with its vision tower also serves images: its image ensemble (found beside the
text one by name) takes each request's images in calls of their own, at most its max_batch_size.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import struct
import time
from collections import deque
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from clip_triton_contract.access import key_headers
from clip_triton_contract.names import (
    CHECKPOINT_PARAMETER,
    EMBEDDING_OUTPUT,
    IMAGE_INPUT,
    SIBLINGS_PARAMETER,
    TEXT_INPUT,
    TOKEN_COUNT_OUTPUT,
    WEIGHTS_PARAMETER,
    image_ensemble_of,
)
from clip_triton_contract.traffic import DEFAULT_CLASS, priority_level

from .errors import APIError, from_grpc, item_error, unavailable
from .settings import Settings

# Readiness embeds this through each model.
PROBE_TEXT = b"a photo of a cat"
# ... and this through each image model: an 8x8 PNG
PROBE_IMAGE = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGOssDnBgA0wYRUdtBIALK8BjKqnz9kAAAAASUVORK5CYII="
)
CATALOG_REFRESH_S = 5.0  # an unknown model name looks the catalog up again at most this often


@dataclass(frozen=True)
class Model:
    name: str
    dim: int
    max_batch_size: int
    checkpoint: str
    weights: str
    created: int  # when this frontend first found it (unix seconds): OpenAI's model objects have one
    image: str = ""  # its image ensemble ("" for a checkpoint built without a vision tower)
    image_max_batch_size: int = 0

    @property
    def modalities(self) -> list[str]:
        return ["text", "image"] if self.image else ["text"]


def text_contents(texts: list[bytes]) -> bytes:
    """A BYTES tensor's raw contents: each element (a text, or an image file) as a 4-byte
    little-endian length and its bytes."""
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


def infer_request(
    model: str, input_name: str, items: list[bytes], priority: int, outputs: tuple[str, ...]
) -> service_pb2.ModelInferRequest:
    """A ModelInfer request of `items` as the one [n, 1] BYTES input, at Triton priority `priority`
    (0: the model's default), asking for `outputs`."""
    request = service_pb2.ModelInferRequest(model_name=model)
    if priority:
        request.parameters["priority"].uint64_param = priority
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = input_name, "BYTES"
    tensor.shape.extend((len(items), 1))
    request.raw_input_contents.append(text_contents(items))
    for name in outputs:
        request.outputs.add().name = name
    return request


class Triton:
    def __init__(self, settings: Settings):
        self.settings = settings
        options = [("grpc.max_receive_message_length", 256 * 1024 * 1024), ("grpc.max_send_message_length", -1)]
        self._channels = [
            grpc.aio.insecure_channel(settings.triton_url, options=[*options, ("grpc.channel_id", i)])
            for i in range(max(1, settings.channels))
        ]
        self._stubs = itertools.cycle([service_pb2_grpc.GRPCInferenceServiceStub(c) for c in self._channels])
        self._metadata = tuple(key_headers(settings.api_key, "grpc").items()) if settings.api_key else ()
        self._batchers: dict[tuple[str, str], Batcher] = {}
        self._models: dict[str, Model] = {}
        self._looked_up = 0.0
        self._lookup_lock = asyncio.Lock()
        self._ready: tuple[float, str | None] = (0.0, "not checked yet")
        self._ready_lock = asyncio.Lock()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    # -- the catalog ------------------------------------------------------------------------
    async def models(self, refresh: bool = False) -> dict[str, Model]:
        """Every model served: settings.models and their siblings. Raises 503 when Triton answers
        for none of them."""
        if self._models and not refresh:
            return self._models
        async with self._lookup_lock:
            if self._models and (not refresh or time.monotonic() - self._looked_up < CATALOG_REFRESH_S):
                return self._models
            found: dict[str, Model] = {}
            queue, seen, failure = list(self.settings.models), set(), None
            while queue:
                name = queue.pop(0)
                if name in seen:
                    continue
                seen.add(name)
                try:
                    model, siblings = await self._describe(name)
                except APIError as exc:
                    failure = exc
                    continue
                found[name] = self._models.get(name) or model
                queue += siblings
            self._looked_up = time.monotonic()
            if not found:
                raise failure or unavailable("no CLIP model is served")
            self._models = found
            return found

    async def model(self, name: str) -> Model | None:
        models = await self.models()
        if name not in models:
            models = await self.models(refresh=True)
        return models.get(name)

    async def _describe(self, name: str) -> tuple[Model, list[str]]:
        request = service_pb2.ModelConfigRequest(name=name)
        try:
            response = await next(self._stubs).ModelConfig(
                request, metadata=self._metadata, timeout=self.settings.ready_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc, name) from None
        config = response.config
        outputs = {o.name: list(o.dims) for o in config.output}
        if EMBEDDING_OUTPUT not in outputs or TOKEN_COUNT_OUTPUT not in outputs:
            raise unavailable(
                f"model `{name}` has no {EMBEDDING_OUTPUT} and {TOKEN_COUNT_OUTPUT} outputs: not a CLIP ensemble"
            )
        params = {k: v.string_value for k, v in config.parameters.items()}
        image, image_batch = await self._image_side(name, int(outputs[EMBEDDING_OUTPUT][-1]))
        model = Model(
            name=name,
            dim=int(outputs[EMBEDDING_OUTPUT][-1]),
            max_batch_size=max(1, config.max_batch_size),
            checkpoint=params.get(CHECKPOINT_PARAMETER, ""),
            weights=params.get(WEIGHTS_PARAMETER, ""),
            created=int(time.time()),
            image=image,
            image_max_batch_size=image_batch,
        )
        return model, [n for n in params.get(SIBLINGS_PARAMETER, "").split(",") if n]

    async def _image_side(self, name: str, dim: int) -> tuple[str, int]:
        """(the image ensemble of text ensemble `name`, its max_batch_size), or ("", 0) when none
        with an IMAGE input and embeddings of the same size is served."""
        image = image_ensemble_of(name)
        try:
            response = await next(self._stubs).ModelConfig(
                service_pb2.ModelConfigRequest(name=image),
                metadata=self._metadata,
                timeout=self.settings.ready_timeout_s,
            )
        except grpc.aio.AioRpcError:
            return "", 0
        config = response.config
        outputs = {o.name: list(o.dims) for o in config.output}
        if [i.name for i in config.input] != [IMAGE_INPUT] or outputs.get(EMBEDDING_OUTPUT, [0])[-1] != dim:
            return "", 0
        return image, max(1, config.max_batch_size)

    # -- inference --------------------------------------------------------------------------
    async def embed(self, model: Model, texts: list[bytes], traffic: str = DEFAULT_CLASS) -> tuple[np.ndarray, int]:
        """([len(texts), dim] float32 in input order, the prompt tokens of all of them); sent at
        `traffic`'s priority, with only requests of the same class in one call."""
        key = (model.name, traffic)
        batcher = self._batchers.get(key)
        if batcher is None or batcher.model != model:
            batcher = self._batchers[key] = Batcher(self, model, self.settings.calls_in_flight, priority_level(traffic))
        size = model.max_batch_size
        if len(texts) <= size:
            return await batcher.embed(texts)
        parts = await asyncio.gather(*(batcher.embed(texts[i : i + size]) for i in range(0, len(texts), size)))
        return np.concatenate([p[0] for p in parts]), sum(p[1] for p in parts)

    async def embed_alone(self, model: Model, texts: list[bytes], priority: int = 0) -> tuple[np.ndarray, int]:
        """One request's texts in calls of their own; a refusal names the first text refused."""
        try:
            vectors, counts = await self._infer(model, texts, self.settings.request_timeout_s, priority)
            return vectors, int(counts.sum())
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise from_grpc(exc, model.name) from None
            timeout = self.settings.request_timeout_s
            raise await self._which_item(
                model.name, lambda part: self._infer(model, part, timeout, priority), texts, exc
            ) from None

    async def embed_images(self, model: Model, images: list[bytes], rows: list[int], traffic: str = DEFAULT_CLASS):
        """[len(images), dim] float32 in order, through the model's image ensemble, in calls of at
        most its max_batch_size; `rows`: each image's place in `input`, for the error naming a
        file Triton refuses."""
        size, priority = model.image_max_batch_size, priority_level(traffic)
        parts = await asyncio.gather(
            *(
                self._embed_images(model, images[i : i + size], rows[i : i + size], priority)
                for i in range(0, len(images), size)
            )
        )
        return np.concatenate(parts)

    async def _embed_images(self, model: Model, images: list[bytes], rows: list[int], priority: int) -> np.ndarray:
        timeout = self.settings.request_timeout_s
        try:
            return await self._infer_images(model, images, timeout, priority)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise from_grpc(exc, model.image) from None
            call = lambda part: self._infer_images(model, part, timeout, priority)  # noqa: E731
            raise await self._which_item(model.image, call, images, exc, rows) from None

    async def _which_item(self, name: str, call, items: list[bytes], exc, rows: list[int] | None = None) -> APIError:
        """The 400 for items Triton refused, naming the first one it refuses on its own (by its
        place in `input`: `rows`, or its place in `items`)."""
        offset = 0
        while len(items) > 1:
            half = len(items) // 2
            try:
                await call(items[:half])
            except grpc.aio.AioRpcError as left:
                if left.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    return from_grpc(left, name)
                items, exc = items[:half], left
                continue
            items, offset = items[half:], offset + half
        return item_error(offset if rows is None else rows[offset], exc.details())

    async def _infer(
        self, model: Model, texts: list[bytes], timeout: float, priority: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """One call: ([n, dim] float32, [n] token counts), at Triton priority `priority` (0: the
        model's default)."""
        request = infer_request(model.name, TEXT_INPUT, texts, priority, (EMBEDDING_OUTPUT, TOKEN_COUNT_OUTPUT))
        response = await next(self._stubs).ModelInfer(request, metadata=self._metadata, timeout=timeout)
        raw = dict(zip((o.name for o in response.outputs), response.raw_output_contents))
        vectors = np.frombuffer(raw[EMBEDDING_OUTPUT], dtype="<f4").reshape(len(texts), model.dim)
        return vectors, np.frombuffer(raw[TOKEN_COUNT_OUTPUT], dtype="<i8")

    async def _infer_images(self, model: Model, images: list[bytes], timeout: float, priority: int = 0) -> np.ndarray:
        """One call to the image ensemble: [n, dim] float32."""
        request = infer_request(model.image, IMAGE_INPUT, images, priority, (EMBEDDING_OUTPUT,))
        response = await next(self._stubs).ModelInfer(request, metadata=self._metadata, timeout=timeout)
        return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(len(images), model.dim)

    # -- readiness --------------------------------------------------------------------------
    async def not_ready(self) -> str | None:
        """None when every model embeds a text within ready_timeout_s, else why not. Checked at
        most every ready_cache_s; concurrent probes share one check."""
        checked, reason = self._ready
        if time.monotonic() - checked < self.settings.ready_cache_s:
            return reason
        async with self._ready_lock:
            checked, reason = self._ready
            if time.monotonic() - checked < self.settings.ready_cache_s:
                return reason
            reason = await self._check()
            self._ready = (time.monotonic(), reason)
            return reason

    async def _check(self) -> str | None:
        try:
            models = await self.models(refresh=True)
            for model in models.values():  # its own call: a request's queue must not hide a wedge
                await self._infer(model, [PROBE_TEXT], self.settings.ready_timeout_s)
                if model.image:
                    await self._infer_images(model, [PROBE_IMAGE], self.settings.ready_timeout_s)
        except APIError as exc:
            return exc.message
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"inference did not answer within {self.settings.ready_timeout_s:g} s"
            return from_grpc(exc, "").message
        return None


class Batcher:
    """One model's calls in one worker: at most `slots` in flight; what arrives meanwhile is queued
    and sent together, up to the model's max_batch_size texts per call."""

    def __init__(self, triton: Triton, model: Model, slots: int, priority: int = 0):
        self.triton, self.model, self.slots, self.priority = triton, model, max(1, slots), priority
        self.queue: deque[tuple[list[bytes], asyncio.Future]] = deque()
        self.busy = 0
        self.calls: set[asyncio.Task] = set()  # the event loop keeps only weak references to tasks

    async def embed(self, texts: list[bytes]) -> tuple[np.ndarray, int]:
        future = asyncio.get_running_loop().create_future()
        self.queue.append((texts, future))
        self._dispatch()
        return await future  # a cancelled request's future is skipped or ignored below

    def _dispatch(self) -> None:
        while self.queue and self.busy < self.slots:
            batch: list[tuple[list[bytes], asyncio.Future]] = []
            size = 0
            while self.queue and (not batch or size + len(self.queue[0][0]) <= self.model.max_batch_size):
                texts, future = self.queue.popleft()
                if not future.done():
                    batch.append((texts, future))
                    size += len(texts)
            if batch:
                self.busy += 1
                call = asyncio.ensure_future(self._call(batch))
                self.calls.add(call)
                call.add_done_callback(self.calls.discard)

    async def _call(self, batch: list[tuple[list[bytes], asyncio.Future]]) -> None:
        try:
            if len(batch) == 1:
                await self._answer(batch[0][1], self.triton.embed_alone(self.model, batch[0][0], self.priority))
                return
            texts = [text for request, _ in batch for text in request]
            try:
                vectors, counts = await self.triton._infer(
                    self.model, texts, self.triton.settings.request_timeout_s, self.priority
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    error = from_grpc(exc, self.model.name)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    return
                # some request's text was refused: each request on its own, so only that one fails
                await asyncio.gather(
                    *(self._answer(f, self.triton.embed_alone(self.model, r, self.priority)) for r, f in batch)
                )
                return
            start = 0
            for request, future in batch:
                end = start + len(request)
                if not future.done():
                    future.set_result((vectors[start:end], int(counts[start:end].sum())))
                start = end
        except Exception as exc:  # never leave a request waiting
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self.busy -= 1
            self._dispatch()

    @staticmethod
    async def _answer(future: asyncio.Future, work) -> None:
        try:
            result = await work
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)
