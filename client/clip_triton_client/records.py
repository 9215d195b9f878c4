"""The bulk job's input side: one line of the input file as a Record (its text, its JSONL record,
its status), and the error of a job that cannot start."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

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
