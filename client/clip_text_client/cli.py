"""clip-text-embed: texts from a file or stdin -> embeddings as .npy or JSONL, through Triton.

    clip-text-embed captions.txt -o captions.npy                 # one text per line
    clip-text-embed docs.jsonl -o out.jsonl --text-field text    # JSONL in, JSONL out (+ "embedding")
    cat captions.txt | clip-text-embed - -o - --format jsonl --protocol http --url localhost:8000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from .client import CLIPTextClient
from .errors import CLIPClientError, InvalidItemError


class InputError(ValueError):
    pass


def read_records(stream, input_format: str, text_field: str) -> tuple[list[str], list[dict | None]]:
    """Texts and, for JSONL input, the original records (to echo them back with the embedding)."""
    texts, records = [], []
    for number, line in enumerate(stream, start=1):
        line = line.rstrip("\n").rstrip("\r")
        if input_format == "lines":
            texts.append(line)
            records.append(None)
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise InputError(f"line {number}: expected an object with a string field {text_field!r}")
        texts.append(record[text_field])
        records.append(record)
    return texts, records


def detect_input_format(path: str, requested: str) -> str:
    if requested != "auto":
        return requested
    return "jsonl" if path.endswith((".jsonl", ".ndjson")) else "lines"


def detect_output_format(path: str, requested: str) -> str:
    if requested != "auto":
        return requested
    return "npy" if path.endswith(".npy") else "jsonl"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="clip-text-embed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="text file (one text per line) or JSONL; '-' for stdin")
    parser.add_argument("-o", "--output", default="-", help="output .npy or .jsonl; '-' for stdout (JSONL)")
    parser.add_argument("--input-format", choices=["auto", "lines", "jsonl"], default="auto")
    parser.add_argument("--format", dest="output_format", choices=["auto", "npy", "jsonl"], default="auto")
    parser.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    parser.add_argument("--url", default=None, help="server address (default localhost:8001 gRPC / :8000 HTTP)")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model", default="clip_text")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    parser.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                        help="request header, e.g. an access key (repeatable)")
    parser.add_argument("--api-key-env", default=None, metavar="VAR",
                        help="send the access key held in this environment variable (restricted servers)")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--wait-ready", type=float, default=0.0, help="seconds to wait for the server")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    headers = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"clip-text-embed: --header needs KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        headers[key] = value
    input_format = detect_input_format(args.input, args.input_format)
    output_format = detect_output_format(args.output, args.output_format)
    if output_format == "npy" and args.output == "-":
        print("clip-text-embed: .npy output needs a file (-o out.npy)", file=sys.stderr)
        return 2
    try:
        if args.input == "-":
            texts, records = read_records(sys.stdin, input_format, args.text_field)
        else:
            with open(args.input, encoding="utf-8") as stream:
                texts, records = read_records(stream, input_format, args.text_field)
    except (InputError, OSError, UnicodeDecodeError) as exc:
        print(f"clip-text-embed: {args.input}: {exc}", file=sys.stderr)
        return 2

    status = 0
    try:
        with CLIPTextClient(args.url, protocol=args.protocol, model=args.model, batch_size=args.batch_size,
                            concurrency=args.concurrency, timeout=args.timeout, headers=headers,
                            wait_ready=args.wait_ready, normalize=args.normalize,
                            api_key=os.environ.get(args.api_key_env) if args.api_key_env else None) as client:
            try:
                vectors = client.encode(texts, show_progress=not args.no_progress)
            except InvalidItemError as exc:
                vectors = exc.result
                for index, message in exc.errors.items():
                    print(f"clip-text-embed: item {index + 1}: {message}", file=sys.stderr)
                status = 1
    except CLIPClientError as exc:
        print(f"clip-text-embed: {exc}", file=sys.stderr)
        return 3

    if output_format == "npy":
        np.save(args.output, vectors)
    else:
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
        try:
            for text, record, vector in zip(texts, records, vectors):
                row = dict(record) if record is not None else {args.text_field: text}
                row["embedding"] = None if np.isnan(vector).any() else [float(x) for x in vector]
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
    if args.output != "-":
        print(f"clip-text-embed: {len(texts)} texts -> {args.output} ({output_format})", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
