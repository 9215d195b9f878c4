"""Embed a file of any size: read, embed and write in chunks, resumable, honest about bad lines.

The job reads the input as bytes, one line at a time, so memory stays bounded by one chunk; each
chunk is embedded through CLIPClient (length-sorted requests, several in flight) and written
before the next is read. A chunk is sized to take about CHECKPOINT_SECONDS at the rate the server
keeps (at most `chunk_lines`, first one round of requests), so progress shows, and is saved, that
often on a slow CPU server and a fast GPU alike. After a chunk is on disk (flushed and fsync'ed)
the job records how far it got in a progress file next to the output; a job started again with the
same command finds the progress file, cuts the output back to the last recorded chunk and goes on
from that input offset, so every input line is written exactly once, in order, however the first
run ended.

Finished work is never thrown away: a finished job leaves a record (`<output>.done.json`, or
`_done.json` in a parquet folder), and the same command run again says the job is done and writes
nothing. An output that no job of this command is writing is replaced only with `restart`.

Images (`images=True`): the input is a folder, whose image files (IMAGE_SUFFIXES, recursively,
in sorted order) are the job's lines, or a file of one image path or URL per line (JSONL: the
path in `text_field`); relative paths are read from the folder, or from the list file's folder.
A folder's listing is part of the job: files added or removed since an interrupted run make it
another job.

The outputs (JSONL, .npy, Parquet) are `writers`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator

from .client import CLIPClient
from .errors import InvalidItemError
from .records import BAD_LINE, EMBEDDED, FAILED, JobError, Record, parse_line
from .writers import JsonlWriter, NpyWriter, ParquetWriter, Writer


@dataclass
class Counts:
    embedded: int = 0
    no_text: int = 0
    bad_line: int = 0
    failed: int = 0

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)

    @property
    def total(self) -> int:
        return self.embedded + self.no_text + self.bad_line + self.failed


# -- progress ----------------------------------------------------------------------------------
@dataclass
class Progress:
    """What the progress file holds: enough to continue exactly where the last chunk ended."""

    job: dict  # the input and the options that shape the output: a resume must match them
    input_offset: int = 0
    lines: int = 0
    output: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def save(self, path: Path) -> None:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(asdict(self), indent=1))
        os.replace(partial, path)


def job_record_path(output: str, output_format: str, kind: str) -> Path | None:
    """Where a job keeps its `kind` record beside its output: "progress" while it runs (what is
    written so far), "done" once it finished (its Progress, whole); None for stdout."""
    if output == "-":
        return None
    if output_format == "parquet":
        return Path(output) / f"_{kind}.json"
    return Path(f"{output}.{kind}.json")


def output_exists(output: str, output_format: str) -> bool:
    if output_format == "parquet":
        return any(Path(output).glob("part-*.parquet*"))
    return output != "-" and os.path.exists(output)


def remove_output(output: str, output_format: str) -> None:
    if output_format == "parquet":
        for stale in Path(output).glob("part-*.parquet*"):
            stale.unlink()
    elif output_exists(output, output_format):
        os.remove(output)


class ChunkSizes:
    """How many lines the next chunk reads: enough for about CHECKPOINT_SECONDS at the rate the
    last chunk was embedded, never fewer than one round of requests, never more than `most`."""

    def __init__(self, first: int, most: int):
        self.least = self.next = max(1, min(first, most))
        self.most = most

    def finished(self, lines: int, seconds: float) -> None:
        rate = lines / max(seconds, 1e-3)
        self.next = int(min(self.most, max(self.least, rate * CHECKPOINT_SECONDS)))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def folder_listing(folder: str) -> bytes:
    """The image files under `folder` (hidden ones left out), one relative path per line, sorted."""
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                paths.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return b"".join(p.encode("utf-8", "surrogateescape") + b"\n" for p in sorted(paths))


def image_source(line: str, base: str) -> str:
    """What an image line names, readable from here: URLs and absolute paths as they are."""
    if line.startswith(("http://", "https://", "data:")) or os.path.isabs(line):
        return line
    return os.path.join(base, line)


def job_identity(input_path: str, options: dict, listing: bytes | None = None) -> dict:
    identity = {"input": os.path.abspath(input_path), **options}
    if listing is not None:
        identity.update(listing_sha1=hashlib.sha1(listing).hexdigest(), listing_bytes=len(listing))
    elif input_path != "-":
        stat = os.stat(input_path)
        identity.update(input_bytes=stat.st_size, input_mtime_ns=stat.st_mtime_ns)
    return identity


# -- the job -----------------------------------------------------------------------------------
def read_chunks(
    stream: IO[bytes], start_line: int, start_offset: int, sizes: ChunkSizes, jsonl: bool, text_field: str
) -> Iterator[tuple[list[Record], int]]:
    """(records, input offset after them) per chunk of `sizes.next` lines, read as each chunk
    starts (offsets are counted, so a pipe works too)."""
    records, number, offset = [], start_line, start_offset
    for raw in stream:
        number += 1
        offset += len(raw)
        records.append(parse_line(number, raw, jsonl, text_field))
        if len(records) >= sizes.next:
            yield records, offset
            records = []
    if records:
        yield records, offset


def embed_chunk(client: CLIPClient, records: list[Record], image_base: str | None = None) -> None:
    """Embed the records' texts, or with `image_base` the images their lines name."""
    todo = [r for r in records if r.status == EMBEDDED]
    if not todo:
        return
    try:
        if image_base is None:
            vectors = client.encode([r.text for r in todo])
        else:
            vectors = client.encode_images([image_source(r.text or "", image_base) for r in todo])
    except InvalidItemError as exc:
        vectors = exc.result
        for index, message in exc.errors.items():
            named = f"{todo[index].text}: {message}" if image_base is not None else message
            todo[index].status, todo[index].error = FAILED, named
    for record, vector in zip(todo, vectors):
        if record.status == EMBEDDED:
            record.embedding = vector


@dataclass
class JobResult:
    counts: Counts  # the whole job's, earlier runs included
    embedded_now: int  # by this run
    seconds: float  # this run's
    resumed_from_line: int
    problems: list[str]  # "line N: reason", at most MAX_PROBLEMS_KEPT of them
    already_done: bool = False  # an earlier run finished this job: nothing was read or written


MAX_PROBLEMS_KEPT = 1000
# About how long one chunk takes: the progress bar and the resume point move at least this often.
CHECKPOINT_SECONDS = 2.0
# Two chunks in flight: the next chunk's requests start while this one's last ones finish, so the
# server never idles at a chunk boundary; memory holds at most two chunks.
CHUNKS_IN_FLIGHT = 2


def run_job(
    client: CLIPClient,
    input_path: str,
    output: str,
    output_format: str,
    *,
    jsonl: bool,
    text_field: str,
    chunk_lines: int = 8192,
    restart: bool = False,
    images: bool = False,
    report: Callable[[str], None] = lambda line: None,
    progress: Callable[[int, int, int | None], None] = lambda offset, embedded_now, size: None,
) -> JobResult:
    """Embed `input_path` into `output`; picks up where an earlier run of the same job stopped.
    `progress` hears, after each chunk, the input offset reached, the items embedded by this run
    and the input's size (bytes of the file or of the folder's listing; None for stdin)."""
    options = {
        "format": output_format,
        "jsonl": jsonl,
        "text_field": text_field,
        "model": client.image_model if images else client.model,
        "normalize": client.normalize,
    }
    folder = images and input_path != "-" and os.path.isdir(input_path)
    listing = folder_listing(input_path) if folder else None
    if folder and not listing:
        raise JobError(f"{input_path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    image_base = None
    if images:
        image_base = (
            input_path if folder else os.path.dirname(os.path.abspath(input_path)) if input_path != "-" else "."
        )
    # a job reading stdin cannot be re-read: it is not resumable, so it keeps no progress file
    state_path = job_record_path(output, output_format, "progress") if input_path != "-" else None
    record_path = job_record_path(output, output_format, "done")
    identity = job_identity(input_path, options, listing)
    state = None
    if record_path is not None and record_path.exists() and not restart and output_exists(output, output_format):
        done = Progress(**json.loads(record_path.read_text()))
        if done.job == identity:  # this very job finished before: say so, touch nothing
            return JobResult(Counts(**done.counts), 0, 0.0, done.lines, [], already_done=True)
    if state_path is not None and state_path.exists() and not restart:
        state = Progress(**json.loads(state_path.read_text()))
        if state.job != identity:
            raise JobError(
                f"{state_path} belongs to another job (input or options changed); pass --restart to start over"
            )
    else:  # a fresh job
        if output_exists(output, output_format) and not restart:
            raise JobError(
                f"{output} already exists and no run of this job is in progress there: "
                "pass --restart to replace it, or choose another output"
            )
        if state_path is not None:
            state_path.unlink(missing_ok=True)
        remove_output(output, output_format)
    if record_path is not None:
        record_path.unlink(missing_ok=True)  # written again when this run finishes

    dim = (client.image_model_info() if images else client.model_info()).dim
    writer: Writer = {
        "jsonl": lambda: JsonlWriter(output, text_field),
        "npy": lambda: NpyWriter(output, dim),
        "parquet": lambda: ParquetWriter(output, dim),
    }[output_format]()
    counts, problems = Counts(), list[str]()
    if state is not None:
        writer.resume(state.output)
        counts = Counts(**state.counts)
    else:
        state = Progress(job=identity)
    resumed_from, embedded_before = state.lines, counts.embedded
    started = time.monotonic()
    stream: IO[bytes]
    size = len(listing) if listing is not None else os.path.getsize(input_path) if input_path != "-" else None
    if listing is not None:
        stream = io.BytesIO(listing)
    else:
        stream = open(input_path, "rb") if input_path != "-" else sys.stdin.buffer
    pending: deque = deque()  # (records, input offset after them, their embedding future), in input order
    sizes = ChunkSizes(client.batch_size * client.concurrency, chunk_lines)
    last_finish = time.monotonic()

    def finish_oldest() -> None:
        nonlocal last_finish
        records, offset, future = pending.popleft()
        future.result()
        now = time.monotonic()
        sizes.finished(len(records), now - last_finish)
        last_finish = now
        writer.write(records)
        for r in records:
            counts.add(r.status)
            if r.status in (BAD_LINE, FAILED):
                message = f"line {r.line}: {r.error}"
                report(message)
                if len(problems) < MAX_PROBLEMS_KEPT:
                    problems.append(message)
        state.input_offset, state.lines = offset, records[-1].line
        state.output, state.counts = writer.position(), asdict(counts)
        if state_path is not None:
            state.save(state_path)
        progress(offset, counts.embedded - embedded_before, size)

    chunks = ThreadPoolExecutor(max_workers=CHUNKS_IN_FLIGHT, thread_name_prefix="clip-triton-embed-chunk")
    try:
        if state.input_offset:
            stream.seek(state.input_offset)
        for records, offset in read_chunks(stream, state.lines, state.input_offset, sizes, jsonl, text_field):
            pending.append((records, offset, chunks.submit(embed_chunk, client, records, image_base)))
            if len(pending) >= CHUNKS_IN_FLIGHT:
                finish_oldest()
        while pending:
            finish_oldest()
    finally:
        # On an error or Ctrl-C the chunk still embedding is dropped (its requests end when the
        # caller closes the client); what was written and recorded stays, for the next run.
        chunks.shutdown(wait=False, cancel_futures=True)
        if stream is not sys.stdin.buffer:
            stream.close()
        writer.close()
    if state_path is not None and record_path is not None:  # done: the same command now says so
        state.save(record_path)
        state_path.unlink(missing_ok=True)
    return JobResult(counts, counts.embedded - embedded_before, time.monotonic() - started, resumed_from, problems)
