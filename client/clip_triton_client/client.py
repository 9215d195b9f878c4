"""CLIPClient: texts, images or documents in, CLIP embeddings out, from a Triton server.

    client = CLIPClient("localhost:8001")              # gRPC; protocol="http" for port 8000
    vectors = client.encode(["a photo of a cat", "a dog"])  # np.ndarray [2, 512] float32
    docs = client.encode(DocList[TextDoc](...))             # fills doc.embedding in place
    images = client.encode_images(["cat.jpg", png_bytes, pil_image])  # the same space as the texts

Items are sent in requests of `batch_size` items, `concurrency` requests in flight, so the
server's dynamic batcher always has work; texts of similar length share requests (the encoder's
cost follows the longest text of a batch); results come back in input order. A request the
server rejects is split until the bad item is found: only that item fails, its neighbours
are embedded. `traffic="bulk"` marks a job's requests so the server serves queries first
(clip_triton_contract.traffic); `queue_timeout` gives each request a deadline in the server's queue.
What an image item may be: clip_triton_client.images.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from clip_triton_contract.access import key_headers
from clip_triton_contract.names import (
    CHECKPOINT_PARAMETER,
    CONTEXT_LENGTH,
    EMBEDDING_OUTPUT,
    ENSEMBLE_MODEL,
    RANDOM_INIT,
    SIBLINGS_PARAMETER,
    WEIGHTS_PARAMETER,
    image_ensemble_of,
)
from clip_triton_contract.statuses import Outcome
from clip_triton_contract.traffic import DEFAULT_CLASS, priority_level

from .errors import (
    CLIPClientError,
    InvalidItemError,
    ModelNotReadyError,
    QueueFullError,
    RequestRejectedError,
    RetryableError,
    ServerError,
    ServerUnavailableError,
)
from .images import REQUEST_BYTES, ImageItemError, document_image, image_bytes, is_document
from .transport import Transport

log = logging.getLogger("clip_triton_client")

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
DEFAULT_MODEL = ENSEMBLE_MODEL  # tensor names and dims come from its served config
SERVER_CONTEXT_LENGTH = CONTEXT_LENGTH  # longer texts are truncated by the server's tokenizer


class RandomWeightsWarning(UserWarning):
    """The server's encoder was built without pretrained weights: embeddings carry no meaning."""


@dataclass(frozen=True)
class ModelInfo:
    input_name: str
    output_name: str
    dim: int
    max_batch_size: int
    weights: str  # "pretrained", "random-init" or "unknown"
    name: str = DEFAULT_MODEL
    checkpoint: str = ""  # the hub id or folder its repository was built from ("" if not stamped)


class CLIPClient:
    def __init__(
        self,
        url: str | None = None,
        protocol: str = "grpc",
        model: str = DEFAULT_MODEL,
        *,
        batch_size: int = 32,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        headers: dict[str, str] | None = None,
        api_key: str | None = None,
        wait_ready: float = 0.0,
        normalize: bool = False,
        sort_by_length: bool = True,
        ssl: bool = False,
        traffic: str = DEFAULT_CLASS,
        queue_timeout: float | None = None,
        image_model: str | None = None,
    ):
        if protocol not in DEFAULT_PORTS:
            raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
        if batch_size < 1 or concurrency < 1 or retries < 0:
            raise ValueError("batch_size and concurrency must be >= 1, retries >= 0")
        self.url = url or f"localhost:{DEFAULT_PORTS[protocol]}"
        self.protocol, self.model = protocol, model
        # the same checkpoint's image side: IMAGE in, EMBEDDING out, in the text model's space
        self.image_model = image_model or image_ensemble_of(model)
        self.batch_size, self.concurrency = batch_size, concurrency
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.headers, self.normalize, self.ssl = dict(headers or {}), normalize, ssl
        if api_key:
            self.headers.update(key_headers(api_key, protocol))  # Triton's restricted APIs
        self.sort_by_length = sort_by_length
        # traffic class (clip_triton_contract.traffic): "interactive" is served first, "bulk" in the
        # room it leaves; queue_timeout: seconds a request may wait in the server's queue
        self.traffic, self.priority = traffic, priority_level(traffic)
        if queue_timeout is not None and queue_timeout <= 0:
            raise ValueError("queue_timeout must be > 0 seconds (or None: no deadline)")
        self.queue_timeout = queue_timeout
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()
        self._info: ModelInfo | None = None
        self._image_info: ModelInfo | None = None
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="clip-triton-client")
        if wait_ready:
            self.wait_until_ready(wait_ready)

    # -- connection ---------------------------------------------------------------------------
    def _transport(self) -> Transport:
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = Transport(self.url, self.protocol, self.timeout, self.headers, self.ssl)
            self._local.transport = transport
            with self._lock:
                self._transports.append(transport)
        return transport

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Block until the model answers ready, or raise after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        server_seen = False
        while True:
            transport = self._transport()
            if transport.server_ready():
                server_seen = True
                if transport.model_ready(self.model):  # AccessDeniedError without the right key
                    return
            if time.monotonic() >= deadline:
                if server_seen:
                    raise ModelNotReadyError(
                        f"server at {self.url} is up, but model {self.model!r} is not ready after {timeout:.0f}s"
                    )
                raise ServerUnavailableError(
                    f"no Triton server ready at {self.url} ({self.protocol}) after {timeout:.0f}s; is it running?"
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)

    def _with_retries(self, fn, *args):
        attempt = 0
        while True:
            try:
                return fn(*args)
            except (RetryableError, ModelNotReadyError, ServerError) as exc:
                if attempt >= self.retries:
                    if exc.outcome is Outcome.OVERLOADED:
                        raise QueueFullError(
                            f"{self.url}: the server was at capacity for {self.traffic} requests through "
                            f"{attempt + 1} attempt(s) ({exc}): retry later or send fewer requests at once"
                        ) from exc
                    if isinstance(exc, ModelNotReadyError):
                        raise ModelNotReadyError(f"model {self.model!r} at {self.url}: {exc}") from exc
                    if isinstance(exc, ServerError):
                        raise ServerError(f"{self.url} failed {attempt + 1} time(s): {exc}") from exc
                    raise ServerUnavailableError(
                        f"no answer from {self.url} ({self.protocol}) after {attempt + 1} attempt(s): {exc}"
                    ) from exc
                time.sleep(min(self.backoff * 2**attempt, 10.0) * (0.5 + random.random()))
                attempt += 1

    # -- model metadata -----------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        """The served model's tensor names, embedding size, max_batch_size, weights stamp and checkpoint."""
        if self._info is None:
            info = self._describe(self.model)
            if info.weights == RANDOM_INIT:
                warnings.warn(
                    f"the server's CLIP text encoder ({self.url}, model {self.model!r}) was built with RANDOM "
                    "weights (no checkpoint could be loaded when its repository was built): embeddings have "
                    "the right shape but carry no meaning. Rebuild with real weights: python -m clip_triton_build "
                    "--checkpoint <id or folder> --require-weights",
                    RandomWeightsWarning,
                    stacklevel=3,
                )
            self._info = info
        return self._info

    def image_model_info(self) -> ModelInfo:
        """The image model's tensor names and embedding size (its `dim` is the text model's)."""
        if self._image_info is None:
            self._image_info = self._describe(self.image_model)
        return self._image_info

    def models(self) -> list[ModelInfo]:
        """Every CLIP model built into the same repository as this client's model (its config's
        `models` stamp), this one included, each described as `model_info` describes it; only the
        model-config API is needed, so the client's key is enough."""
        config = self._with_retries(self._transport().model_config, self.model)
        names = [n for n in _parameter(config, SIBLINGS_PARAMETER).split(",") if n] or [self.model]
        return [self.model_info() if name == self.model else self._describe(name) for name in names]

    def _describe(self, model: str) -> ModelInfo:
        transport = self._transport()
        config = self._with_retries(transport.model_config, model)
        outputs = config.get("output", [])
        if len(outputs) > 1:
            outputs = [o for o in outputs if o["name"] == EMBEDDING_OUTPUT]
        if len(config.get("input", [])) != 1 or len(outputs) != 1:
            raise CLIPClientError(f"model {model!r} must have one input and one output (or {EMBEDDING_OUTPUT!r})")
        return ModelInfo(
            input_name=config["input"][0]["name"],
            output_name=outputs[0]["name"],
            dim=int(outputs[0]["dims"][-1]),
            max_batch_size=int(config.get("max_batch_size", 0)),
            weights=self._stamp(config, WEIGHTS_PARAMETER, transport) or "unknown",
            name=model,
            checkpoint=self._stamp(config, CHECKPOINT_PARAMETER, transport),
        )

    def _stamp(self, config: dict, key: str, transport: Transport) -> str:
        """A build stamp of the model, or of the first of its ensemble's steps that has it."""
        stamp = _parameter(config, key)
        if stamp:
            return stamp
        for step in config.get("ensemble_scheduling", {}).get("step", []):
            try:
                inner = self._with_retries(transport.model_config, step["model_name"])
            except CLIPClientError:
                continue
            stamp = _parameter(inner, key)
            if stamp:
                return stamp
        return ""

    # -- encoding -----------------------------------------------------------------------------
    def encode(
        self,
        items: Iterable[Any],
        *,
        normalize: bool | None = None,
        show_progress: bool = False,
        on_error: str = "raise",
        _cancel: threading.Event | None = None,
    ):
        """Embed texts.

        - a list/iterable of str -> np.ndarray [N, dim] float32, row i for item i;
        - documents (docarray DocList[TextDoc], or any objects with `.text`) -> the same sequence,
          each document's `.embedding` filled in place; documents with empty or no text are skipped.

        on_error="raise" (default) raises InvalidItemError after embedding everything else;
        "skip" returns the partial result (NaN rows / untouched documents) and logs the errors.
        """
        check_on_error(on_error)
        if isinstance(items, (str, bytes)):
            raise TypeError(
                "encode() takes a list of texts or documents, not a single string: use encode([text]) to embed one text"
            )
        items = items if hasattr(items, "__getitem__") and hasattr(items, "__len__") else list(items)
        collected = collect_texts(items)
        docs_mode, _, payloads, _ = collected
        info = self.model_info() if payloads or not docs_mode else None  # warns at the caller's line
        return self._encode(info, items, collected, None, normalize, show_progress, on_error, _cancel)

    def encode_images(
        self,
        items: Iterable[Any],
        *,
        normalize: bool | None = None,
        show_progress: bool = False,
        on_error: str = "raise",
        _cancel: threading.Event | None = None,
    ):
        """Embed images, into the same space as encode()'s texts of this checkpoint.

        - a list/iterable of images (paths, URLs, data URIs, encoded bytes, PIL images, HWC uint8
          arrays: clip_triton_client.images) -> np.ndarray [N, dim] float32, row i for item i;
        - documents (docarray DocList[ImageDoc] with `url`, `tensor` or `bytes_`; Jina Documents
          with `uri`, `tensor` or `blob`) -> the same sequence, `.embedding` filled in place;
          documents without an image are skipped.

        on_error as for encode(): a file that cannot be read or decoded fails alone.
        """
        check_on_error(on_error)
        if isinstance(items, (str, bytes, os.PathLike)) or (isinstance(items, np.ndarray) and items.ndim < 4):
            raise TypeError("encode_images() takes a list of images or documents: use encode_images([image]) for one")
        items = items if hasattr(items, "__getitem__") and hasattr(items, "__len__") else list(items)
        if isinstance(items, np.ndarray):
            items = list(items)  # [N, H, W, C]: N images
        collected = collect_images(items)
        docs_mode, _, sources, _ = collected
        info = self.image_model_info() if sources or not docs_mode else None
        return self._encode(info, items, collected, image_bytes, normalize, show_progress, on_error, _cancel)

    def _encode(self, info: ModelInfo | None, items, collected, prepare, normalize, show_progress, on_error, cancel):
        """What encode() and encode_images() share once their items are `collected` (collect_texts'
        or collect_images' answer): the requests, normalisation, the result and its errors."""
        docs_mode, positions, payloads, errors = collected
        embeddings, failed = None, {}
        if payloads and info is not None:
            embeddings, failed = self._embed_all(info, payloads, show_progress, cancel, prepare)
        for local, message in failed.items():
            errors[positions[local]] = message
        if embeddings is not None and (self.normalize if normalize is None else normalize):
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            embeddings = embeddings / np.maximum(norms, 1e-12)
        result = scatter(items, docs_mode, positions, embeddings, failed, info.dim if info else 0)
        if errors:
            if on_error == "raise":
                raise InvalidItemError(errors, result)
            for index, message in sorted(errors.items()):
                log.warning("item %d not embedded: %s", index, message)
        return result

    async def aencode(self, items: Iterable[Any], **kwargs):
        """encode() for asyncio: runs off the event loop, same arguments and results. Cancelling
        the awaiting task stops sending further requests (those in flight finish)."""
        return await self._off_loop(self.encode, items, kwargs)

    async def aencode_images(self, items: Iterable[Any], **kwargs):
        """encode_images() for asyncio, as aencode() is for encode()."""
        return await self._off_loop(self.encode_images, items, kwargs)

    async def _off_loop(self, method, items, kwargs):
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        future = loop.run_in_executor(None, functools.partial(method, items, _cancel=cancel, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _embed_all(self, info: ModelInfo, payloads: list, show_progress: bool, cancel=None, prepare=None):
        """Every payload's vector and {index: error}. `prepare` (images) turns a payload into the
        bytes to send, in the worker that sends it; without it payloads are texts' bytes."""
        size = min(self.batch_size, info.max_batch_size) if info.max_batch_size > 0 else 1
        # Length-sorted requests: a batch costs as much as its longest text times its size (the
        # encoder trims to the longest), so texts of similar length travel together. Byte length
        # is a cheap proxy for token length. Results are put back in input order below.
        # Images cost the same whatever their file's size: they keep their order.
        if self.sort_by_length and prepare is None:
            order = np.argsort([len(p) for p in payloads], kind="stable")
        else:
            order = np.arange(len(payloads))
        ordered = [payloads[i] for i in order]
        chunks = [(start, ordered[start : start + size]) for start in range(0, len(ordered), size)]
        embeddings = np.empty((len(payloads), info.dim), dtype=np.float32)
        failed: dict[int, str] = {}
        progress = None
        if show_progress:
            from tqdm.auto import tqdm

            unit = "text" if prepare is None else "image"
            progress = tqdm(total=len(payloads), unit=unit, desc=f"embedding ({info.name})")
        work = self._embed_chunk if prepare is None else functools.partial(self._embed_images, prepare=prepare)
        try:
            # bounded in flight: at most `concurrency` chunks are submitted ahead of the results
            futures = {}
            next_chunk = 0
            for done_index in range(len(chunks)):
                if cancel is not None and cancel.is_set():
                    raise CLIPClientError("encode cancelled")
                while next_chunk < len(chunks) and next_chunk < done_index + self.concurrency:
                    futures[next_chunk] = self._pool.submit(work, info, chunks[next_chunk][1])
                    next_chunk += 1
                start, chunk = chunks[done_index]
                vectors, chunk_failed = futures.pop(done_index).result()
                embeddings[order[start : start + len(chunk)]] = vectors
                failed.update({int(order[start + i]): msg for i, msg in chunk_failed.items()})
                if progress is not None:
                    progress.update(len(chunk))
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
        finally:
            if progress is not None:
                progress.close()
        return embeddings, failed

    def _embed_images(self, info: ModelInfo, sources: list, prepare):
        """_embed_chunk for image sources: each read or encoded here (one that cannot be fails
        alone), sent in requests of at most REQUEST_BYTES."""
        vectors = np.full((len(sources), info.dim), np.nan, dtype=np.float32)
        failed: dict[int, str] = {}
        requests: list[list[tuple[int, bytes]]] = [[]]
        carried = 0
        for index, source in enumerate(sources):
            try:
                data = prepare(source)
            except ImageItemError as exc:
                failed[index] = str(exc)
                continue
            if requests[-1] and carried + len(data) > REQUEST_BYTES:
                requests.append([])
                carried = 0
            requests[-1].append((index, data))
            carried += len(data)
        for request in requests:
            if not request:
                continue
            indices = [index for index, _ in request]
            got, request_failed = self._embed_chunk(info, [data for _, data in request])
            vectors[indices] = got
            failed.update({indices[i]: message for i, message in request_failed.items()})
        return vectors, failed

    def _embed_chunk(self, info: ModelInfo, payloads: list[bytes]):
        """(vectors [n, dim], {index in chunk: error}) - bisects a rejected request to find the
        bad item(s) so the others still get embedded."""
        try:
            vectors = self._with_retries(
                self._transport().infer,
                info.name,
                info.input_name,
                info.output_name,
                payloads,
                self.priority,
                None if self.queue_timeout is None else max(1, int(self.queue_timeout * 1e6)),
            )
        except RequestRejectedError as exc:
            if len(payloads) == 1:
                return np.full((1, info.dim), np.nan, dtype=np.float32), {0: str(exc)}
            mid = len(payloads) // 2
            left, left_failed = self._embed_chunk(info, payloads[:mid])
            right, right_failed = self._embed_chunk(info, payloads[mid:])
            return np.concatenate([left, right]), {**left_failed, **{mid + i: m for i, m in right_failed.items()}}
        if vectors is None or vectors.shape != (len(payloads), info.dim):
            raise CLIPClientError(
                f"server returned shape {None if vectors is None else vectors.shape} "
                f"for {len(payloads)} items (expected {(len(payloads), info.dim)})"
            )
        return vectors.astype(np.float32, copy=False), {}

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for transport in self._transports:
                transport.close()
            self._transports.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _parameter(config: dict, key: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", "")


def check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")


def collect_texts(items) -> tuple[bool, list[int], list[bytes], dict[int, str]]:
    """What encode() sends: (documents or plain texts, the index of each text sent, its UTF-8
    bytes, {index: why not sent} for items that cannot be embedded). Documents without text are
    neither sent nor errors (like Jina's CLIPTextEncoder, they are skipped)."""
    docs_mode = any(hasattr(item, "text") for item in items)
    positions, payloads, errors = [], [], {}
    for index, item in enumerate(items):
        if docs_mode:
            if not hasattr(item, "text"):
                errors[index] = f"{type(item).__name__} has no .text attribute"
                continue
            text = item.text
            if text is None or (isinstance(text, str) and text == ""):
                continue
        else:
            text = item
        if not isinstance(text, str):
            errors[index] = f"text must be str, not {type(text).__name__}"
            continue
        try:
            payloads.append(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            errors[index] = f"text is not encodable as UTF-8 ({exc.reason} at position {exc.start})"
            continue
        positions.append(index)
    return docs_mode, positions, payloads, errors


def collect_images(items) -> tuple[bool, list[int], list[Any], dict[int, str]]:
    """What encode_images() sends: (documents or plain images, the index of each image sent, its
    source (read when its request is sent), {index: why not sent}). Documents without an image are
    skipped, as documents without text are."""
    docs_mode = any(is_document(item) for item in items)
    positions, sources, errors = [], [], {}
    for index, item in enumerate(items):
        if docs_mode:
            if not is_document(item):
                errors[index] = f"{type(item).__name__} is not a document with an image field"
                continue
            item = document_image(item)
            if item is None:
                continue
        if item is None:
            errors[index] = "None is not an image"
            continue
        positions.append(index)
        sources.append(item)
    return docs_mode, positions, sources, errors


def scatter(items, docs_mode: bool, positions: list[int], embeddings, failed: dict[int, str], dim: int):
    """encode()'s result: documents get `.embedding` in place (failed ones untouched); plain texts
    get an [N, dim] array, row i for item i, NaN where nothing was embedded."""
    if docs_mode:
        for local, index in enumerate(positions):
            if local not in failed:
                items[index].embedding = embeddings[local]
        return items
    result = np.full((len(items), dim), np.nan, dtype=np.float32)
    if positions:
        result[positions] = embeddings
    return result
