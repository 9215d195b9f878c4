"""Embed a file of any size: read, embed and write in chunks, resumable, honest about bad lines.

The job reads the input as bytes, one line at a time, so memory stays bounded by one chunk; each
chunk is embedded through CLIPTextClient (length-sorted requests, several in flight) and written
before the next is read. After a chunk is on disk (flushed and fsync'ed) the job records how far
it got in a progress file next to the output; a job started again with the same command finds the
progress file, cuts the output back to the last recorded chunk and goes on from that input
offset, so every input line is written exactly once, in order, however the first run ended.

Outputs (`OutputFormat`):
- jsonl: each record (or `{"line": n, "text": ...}` for plain lines) with `embedding` added;
  records without text pass through without one.
- npy: one float32 row per input line (row i = line i + 1), NaN where a line has no embedding;
  the header is rewritten at the end (and after every chunk) so a partial file still loads.
- parquet: a folder of `part-NNNNN.parquet` files, one per chunk: `line`, `status`, `error`,
  `text`, `record` (the JSONL record, as JSON) and `embedding` (list of float32, null where
  none). One file type holds ids and vectors row-aligned, and pandas, polars, DuckDB, Arrow
  and Hugging Face datasets read it part by part (pyarrow: `pip install 'clip-text-client[dataset]'`).
"""

from __future__ import annotations

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

import numpy as np

from .client import CLIPTextClient
from .errors import InvalidItemError

EMBEDDED, NO_TEXT, BAD_LINE, FAILED = "embedded", "no_text", "bad_line", "failed"


class JobError(ValueError):
    """The job cannot start as asked (its message says why); nothing was written."""


@dataclass
class Record:
    line: int  # 1-based input line number
    text: str | None  # None: nothing to embed
    record: dict | None  # the JSONL record, echoed back
    status: str = EMBEDDED
    error: str = ""
    embedding: np.ndarray | None = None


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


def parse_line(number: int, raw: bytes, jsonl: bool, text_field: str) -> Record:
    """One input line -> a Record; a line that is not UTF-8 (or not a JSON object) is a bad line."""
    raw = raw.rstrip(b"\n").rstrip(b"\r")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Record(
            number, None, None, BAD_LINE, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        )
    if not jsonl:
        return Record(number, line or None, None, EMBEDDED if line else NO_TEXT)
    if not line.strip():
        return Record(number, None, None, NO_TEXT)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return Record(number, None, None, BAD_LINE, f"not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(record, dict):
        return Record(number, None, None, BAD_LINE, "not a JSON object")
    text = record.get(text_field)
    if not isinstance(text, str) or not text:  # the seed's rule: documents without text are skipped
        return Record(number, None, record, NO_TEXT)
    return Record(number, text, record)


# -- outputs -----------------------------------------------------------------------------------
class Writer:
    """Writes chunks; `position()` is what the progress file records, `resume(position)` cuts the
    output back to it."""

    def write(self, records: list[Record]) -> None:
        raise NotImplementedError

    def position(self) -> dict:
        raise NotImplementedError

    def resume(self, position: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _sync(stream: IO) -> None:
    stream.flush()
    try:
        os.fsync(stream.fileno())
    except (OSError, io.UnsupportedOperation):  # stdout to a pipe
        pass


class JsonlWriter(Writer):
    def __init__(self, path: str, text_field: str):
        self.text_field = text_field
        self.stream = open(path, "ab") if path != "-" else None
        self.out = self.stream if self.stream is not None else os.fdopen(os.dup(1), "wb")

    def write(self, records):
        lines = []
        for r in records:
            if r.status == BAD_LINE:
                continue  # reported on stderr; there is no record to echo
            row = dict(r.record) if r.record is not None else {"line": r.line, self.text_field: r.text or ""}
            if r.embedding is not None:
                row["embedding"] = [float(x) for x in r.embedding]
            elif r.status == FAILED:
                row["error"] = r.error
            lines.append(json.dumps(row, ensure_ascii=False))
        if lines:
            self.out.write(("\n".join(lines) + "\n").encode("utf-8"))
        _sync(self.out)

    def position(self):
        return {"bytes": self.out.tell() if self.stream is not None else None}

    def resume(self, position):
        if self.stream is None:
            raise JobError("output to stdout cannot be resumed: write to a file")
        self.stream.truncate(position["bytes"])
        self.stream.seek(position["bytes"])

    def close(self):
        _sync(self.out)
        self.out.close()


class NpyWriter(Writer):
    """A .npy file grown a chunk at a time: a fixed-size header, rewritten with the row count."""

    HEADER_BYTES = 128

    def __init__(self, path: str, dim: int):
        if path == "-":
            raise JobError(".npy output needs a file (-o out.npy)")
        self.path, self.dim = path, dim
        exists = os.path.exists(path)
        self.stream = open(path, "r+b" if exists else "w+b")
        self.rows = 0
        if not exists:
            self._write_header()

    def _write_header(self):
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.dim)}
        text = repr(header).encode("latin1")
        prefix = b"\x93NUMPY\x01\x00"
        body_len = self.HEADER_BYTES - len(prefix) - 2
        padded = text + b" " * (body_len - len(text) - 1) + b"\n"
        self.stream.seek(0)
        self.stream.write(prefix + body_len.to_bytes(2, "little") + padded)

    def write(self, records):
        block = np.full((len(records), self.dim), np.nan, dtype="<f4")
        for i, r in enumerate(records):
            if r.embedding is not None:
                block[i] = r.embedding
        self.stream.seek(self.HEADER_BYTES + self.rows * self.dim * 4)
        self.stream.write(block.tobytes())
        self.rows += len(records)
        self._write_header()
        _sync(self.stream)

    def position(self):
        return {"rows": self.rows}

    def resume(self, position):
        self.rows = position["rows"]
        self.stream.truncate(self.HEADER_BYTES + self.rows * self.dim * 4)
        self._write_header()

    def close(self):
        _sync(self.stream)
        self.stream.close()


class ParquetWriter(Writer):
    def __init__(self, path: str, dim: int):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise JobError("parquet output needs pyarrow: pip install 'clip-text-client[dataset]'") from None
        if path == "-":
            raise JobError("parquet output needs a folder (-o out/ --format parquet)")
        self.folder, self.dim, self.parts = Path(path), dim, 0
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, records):
        import pyarrow as pa
        import pyarrow.parquet as pq

        valid = np.array([r.embedding is not None for r in records])
        vectors = [r.embedding for r in records if r.embedding is not None]
        values = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros(0, np.float32)
        # a null row takes no values (Parquet refuses nulls that hold some, as a fixed-size list's would)
        offsets = np.concatenate([[0], np.cumsum(np.where(valid, self.dim, 0))]).astype(np.int32)
        embedding = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=pa.array(~valid))
        table = pa.table(
            {
                "line": pa.array([r.line for r in records], pa.int64()),
                "status": pa.array([r.status for r in records], pa.string()),
                "error": pa.array([r.error or None for r in records], pa.string()),
                "text": pa.array([r.text for r in records], pa.string()),
                "record": pa.array(
                    [json.dumps(r.record, ensure_ascii=False) if r.record is not None else None for r in records],
                    pa.string(),
                ),
                "embedding": embedding,
            }
        )
        final = self.folder / f"part-{self.parts:05d}.parquet"
        partial = final.with_suffix(".parquet.partial")
        pq.write_table(table, partial)
        os.replace(partial, final)  # a part is there whole or not at all
        self.parts += 1

    def position(self):
        return {"parts": self.parts}

    def resume(self, position):
        self.parts = position["parts"]
        for stale in self.folder.glob("part-*.parquet*"):
            index = int(stale.name.split("-")[1].split(".")[0])
            if index >= self.parts:
                stale.unlink()


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


def progress_path(output: str, output_format: str) -> Path | None:
    if output == "-":
        return None
    if output_format == "parquet":
        return Path(output) / "_progress.json"
    return Path(output + ".progress.json")


def job_identity(input_path: str, options: dict) -> dict:
    identity = {"input": os.path.abspath(input_path), **options}
    if input_path != "-":
        stat = os.stat(input_path)
        identity.update(input_bytes=stat.st_size, input_mtime_ns=stat.st_mtime_ns)
    return identity


# -- the job -----------------------------------------------------------------------------------
def read_chunks(
    stream: IO[bytes], start_line: int, start_offset: int, chunk_lines: int, jsonl: bool, text_field: str
) -> Iterator[tuple[list[Record], int]]:
    """(records, input offset after them) per chunk of `chunk_lines` lines (offsets are counted,
    so a pipe works too)."""
    records, number, offset = [], start_line, start_offset
    for raw in stream:
        number += 1
        offset += len(raw)
        records.append(parse_line(number, raw, jsonl, text_field))
        if len(records) >= chunk_lines:
            yield records, offset
            records = []
    if records:
        yield records, offset


def embed_chunk(client: CLIPTextClient, records: list[Record]) -> None:
    todo = [r for r in records if r.status == EMBEDDED]
    if not todo:
        return
    try:
        vectors = client.encode([r.text for r in todo])
    except InvalidItemError as exc:
        vectors = exc.result
        for index, message in exc.errors.items():
            todo[index].status, todo[index].error = FAILED, message
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


MAX_PROBLEMS_KEPT = 1000
# Two chunks in flight: the next chunk's requests start while this one's last ones finish, so the
# server never idles at a chunk boundary; memory holds at most two chunks.
CHUNKS_IN_FLIGHT = 2


def run_job(
    client: CLIPTextClient,
    input_path: str,
    output: str,
    output_format: str,
    *,
    jsonl: bool,
    text_field: str,
    chunk_lines: int = 8192,
    restart: bool = False,
    report: Callable[[str], None] = lambda line: None,
    progress: Callable[[int, int], None] = lambda offset, embedded_now: None,
) -> JobResult:
    """Embed `input_path` into `output`; picks up where an earlier run of the same job stopped."""
    options = {
        "format": output_format,
        "jsonl": jsonl,
        "text_field": text_field,
        "model": client.model,
        "normalize": client.normalize,
    }
    # a job reading stdin cannot be re-read: it is not resumable, so it keeps no progress file
    state_path = progress_path(output, output_format) if input_path != "-" else None
    identity = job_identity(input_path, options)
    state = None
    if state_path is not None and state_path.exists() and not restart:
        state = Progress(**json.loads(state_path.read_text()))
        if state.job != identity:
            raise JobError(
                f"{state_path} belongs to another job (input or options changed); pass --restart to start over"
            )
    else:  # a fresh job: nothing stale from an earlier one, finished or not
        if state_path is not None:
            state_path.unlink(missing_ok=True)
        if output_format == "parquet" and Path(output).exists():
            for stale in Path(output).glob("part-*.parquet*"):
                stale.unlink()
        elif output_format != "parquet" and output != "-" and os.path.exists(output):
            os.remove(output)

    dim = client.model_info().dim
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
    stream = open(input_path, "rb") if input_path != "-" else sys.stdin.buffer
    pending: deque = deque()  # (records, input offset after them, their embedding future), in input order

    def finish_oldest() -> None:
        records, offset, future = pending.popleft()
        future.result()
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
        progress(offset, counts.embedded - embedded_before)

    chunks = ThreadPoolExecutor(max_workers=CHUNKS_IN_FLIGHT, thread_name_prefix="clip-text-embed-chunk")
    try:
        if state.input_offset:
            stream.seek(state.input_offset)
        for records, offset in read_chunks(stream, state.lines, state.input_offset, chunk_lines, jsonl, text_field):
            pending.append((records, offset, chunks.submit(embed_chunk, client, records)))
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
    if state_path is not None:
        state_path.unlink(missing_ok=True)  # done: the same command now starts a new job
    return JobResult(counts, counts.embedded - embedded_before, time.monotonic() - started, resumed_from, problems)
