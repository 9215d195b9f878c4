"""The ensemble over Triton's gRPC API, from asyncio: one worker's channels, its catalog of
models and its bound on requests in flight.

Requests are built from Triton's own protobuf messages (tritonclient.grpc.service_pb2) with the
texts in `raw_input_contents` and read back from `raw_output_contents` as numpy views: no
per-tensor Python objects between the HTTP body and the gRPC call. The ensemble's TOKEN_COUNT
output (its tokenizer's count of each text's tokens) comes back beside EMBEDDING for
usage.prompt_tokens.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from clip_text_client.access import key_headers
from clip_triton_build.spec import (
    CHECKPOINT_PARAMETER,
    EMBEDDING_OUTPUT,
    SIBLINGS_PARAMETER,
    TEXT_INPUT,
    TOKEN_COUNT_OUTPUT,
    WEIGHTS_PARAMETER,
)

from .errors import APIError, bad_request, from_grpc, unavailable
from .settings import Settings

# Readiness embeds this through each model.
PROBE_TEXT = b"a photo of a cat"
CATALOG_REFRESH_S = 5.0  # an unknown model name looks the catalog up again at most this often


@dataclass(frozen=True)
class Model:
    name: str
    dim: int
    max_batch_size: int
    checkpoint: str
    weights: str
    created: int  # when this frontend first found it (unix seconds): OpenAI's model objects have one


def text_contents(texts: list[bytes]) -> bytes:
    """A BYTES tensor's raw contents: each element as a 4-byte little-endian length and its bytes."""
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


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
        self._slots = asyncio.Semaphore(settings.max_in_flight)
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
        model = Model(
            name=name,
            dim=int(outputs[EMBEDDING_OUTPUT][-1]),
            max_batch_size=max(1, config.max_batch_size),
            checkpoint=params.get(CHECKPOINT_PARAMETER, ""),
            weights=params.get(WEIGHTS_PARAMETER, ""),
            created=int(time.time()),
        )
        return model, [n for n in params.get(SIBLINGS_PARAMETER, "").split(",") if n]

    # -- inference --------------------------------------------------------------------------
    async def embed(self, model: Model, texts: list[bytes]) -> tuple[np.ndarray, int]:
        """([len(texts), dim] float32 in input order, the prompt tokens of all of them)."""
        size = model.max_batch_size
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        if len(chunks) == 1:
            parts = [await self._embed_chunk(model, chunks[0], 0)]
        else:
            parts = await asyncio.gather(*(self._embed_chunk(model, c, i * size) for i, c in enumerate(chunks)))
        vectors = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        return vectors, sum(p[1] for p in parts)

    async def _embed_chunk(self, model: Model, texts: list[bytes], offset: int) -> tuple[np.ndarray, int]:
        try:
            return await self._infer(model, texts, self.settings.request_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise from_grpc(exc, model.name) from None
            raise await self._which_item(model, texts, offset, exc) from None

    async def _which_item(self, model: Model, texts: list[bytes], offset: int, exc) -> APIError:
        """The 400 for a chunk Triton refused, naming the first item it refuses on its own."""
        while len(texts) > 1:
            half = len(texts) // 2
            try:
                await self._infer(model, texts[:half], self.settings.request_timeout_s)
            except grpc.aio.AioRpcError as left:
                if left.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    return from_grpc(left, model.name)
                texts, exc = texts[:half], left
                continue
            texts, offset = texts[half:], offset + half
        return bad_request(f"input[{offset}]: {exc.details()}", param="input")

    async def _infer(self, model: Model, texts: list[bytes], timeout: float) -> tuple[np.ndarray, int]:
        request = service_pb2.ModelInferRequest(model_name=model.name)
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = TEXT_INPUT, "BYTES"
        tensor.shape.extend((len(texts), 1))
        request.raw_input_contents.append(text_contents(texts))
        request.outputs.add().name = EMBEDDING_OUTPUT
        request.outputs.add().name = TOKEN_COUNT_OUTPUT
        async with self._slots:
            response = await next(self._stubs).ModelInfer(request, metadata=self._metadata, timeout=timeout)
        raw = dict(zip((o.name for o in response.outputs), response.raw_output_contents))
        vectors = np.frombuffer(raw[EMBEDDING_OUTPUT], dtype="<f4").reshape(len(texts), model.dim)
        return vectors, int(np.frombuffer(raw[TOKEN_COUNT_OUTPUT], dtype="<i8").sum())

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
            for model in models.values():
                await self._infer(model, [PROBE_TEXT], self.settings.ready_timeout_s)
        except APIError as exc:
            return exc.message
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"inference did not answer within {self.settings.ready_timeout_s:g} s"
            return from_grpc(exc, "").message
        return None
