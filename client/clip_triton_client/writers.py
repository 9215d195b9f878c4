"""The bulk job's outputs, one class each: every writer writes a chunk of records, says how far
it got (`position`, what the progress file records) and cuts its output back to such a position
(`resume`), so a resumed job writes every line exactly once.

- jsonl: each record (or `{"line": n, "text": ...}` for plain lines) with `embedding` added;
  records without text pass through without one.
- npy: one float32 row per input line (row i = line i + 1), NaN where a line has no embedding;
  the header is rewritten at the end (and after every chunk) so a partial file still loads.
- parquet: a folder of `part-NNNNN.parquet` files, one per chunk: `line`, `status`, `error`,
  `text`, `record` (the JSONL record, as JSON) and `embedding` (list of float32, null where
  none). One file type holds ids and vectors row-aligned, and pandas, polars, DuckDB, Arrow
  and Hugging Face datasets read it part by part (pyarrow: `pip install 'clip-triton-client[dataset]'`).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import IO

import numpy as np

from .records import BAD_LINE, FAILED, JobError, Record


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
            raise JobError("parquet output needs pyarrow: pip install 'clip-triton-client[dataset]'") from None
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
