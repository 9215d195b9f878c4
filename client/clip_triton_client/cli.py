"""clip-triton-embed: texts from a file or stdin -> embeddings, through Triton, in bounded memory.

    clip-triton-embed captions.txt -o captions.npy                 # one text per line; row i = line i+1
    clip-triton-embed docs.jsonl -o out.jsonl --text-field text    # JSONL in, JSONL out (+ "embedding")
    clip-triton-embed docs.jsonl -o index/ --format parquet        # parquet parts: ids + embeddings
    cat docs.jsonl | clip-triton-embed - --protocol http --url localhost:8000 > out.jsonl
    clip-triton-embed --images photos/ -o photos.parquet          # every image file under photos/
    clip-triton-embed --images urls.txt -o photos.npy             # one image path or URL per line

Input is read, embedded and written a chunk at a time, each sized to take a few seconds at the
server's pace, and progress is saved after each. An interrupted job (Ctrl-C, a server that went away, a machine that
stopped) continues where it stopped when the same command runs again; a finished one says so and
writes nothing. An existing output is replaced only with --restart.
Lines that are not UTF-8 (or not JSON, for JSONL) are reported with their line number and
skipped; records without text pass through without an embedding. An image that cannot be read or
decoded is reported with its line number and path, and the job goes on.
Exit status: 0 all embedded; 1 some lines bad or not embedded (reported, the rest written);
2 unusable arguments or input; 3 no server answered; 130 interrupted (run it again to continue).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from typing import cast

from clip_triton_contract.access import header_arguments
from clip_triton_contract.traffic import BULK, PRIORITY_LEVELS

from .bulk import CHECKPOINT_SECONDS, run_job
from .client import DEFAULT_MODEL, CLIPClient
from .errors import CLIPClientError
from .records import JobError


def detect_input_format(path: str, requested: str, text_field_given: bool) -> str:
    """lines or jsonl: by name, by --text-field, else by a look at the first line (stdin too)."""
    if requested != "auto":
        return requested
    if path.endswith((".jsonl", ".ndjson")) or text_field_given:
        return "jsonl"
    if os.path.isdir(path):  # a folder of images: its listing, one path a line
        return "lines"
    if path == "-":
        stdin = cast(io.BufferedReader, sys.stdin.buffer)  # what Python gives stdin: peek() does not consume
        head = stdin.peek(4096)[:4096]
    else:
        with open(path, "rb") as stream:
            head = stream.read(4096)
    return "jsonl" if head.lstrip().startswith(b"{") else "lines"


def detect_output_format(path: str, requested: str) -> str:
    if requested != "auto":
        return requested
    if path.endswith(".npy"):
        return "npy"
    if path.endswith(("/", ".parquet")) or os.path.isdir(path):
        return "parquet"
    return "jsonl"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="clip-triton-embed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", nargs="?", help="text file (one text per line) or JSONL; '-' for stdin")
    parser.add_argument(
        "-o", "--output", default="-", help="out.jsonl, out.npy or a folder for parquet parts; '-' for stdout (JSONL)"
    )
    parser.add_argument(
        "--images",
        action="store_true",
        help="embed images: the input is a folder of image files, or a file of one image path or URL per line "
        "(relative paths from the file's folder; JSONL: the path in --text-field, default image)",
    )
    parser.add_argument("--input-format", choices=["auto", "lines", "jsonl"], default="auto")
    parser.add_argument("--format", dest="output_format", choices=["auto", "npy", "jsonl", "parquet"], default="auto")
    parser.add_argument(
        "--text-field", default=None, help="JSONL field holding the text (default: text; giving it means JSONL input)"
    )
    parser.add_argument("--url", default=None, help="server address (default localhost:8001 gRPC / :8000 HTTP)")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"the served model to call (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--list-models",
        action="store_true",
        help="print the models served beside --model (name, dim, weights, checkpoint; tab-separated) and exit",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--chunk-lines",
        type=int,
        default=8192,
        help="the most lines read, embedded and written at a time (bounds memory; default 8192); "
        f"a chunk is sized to take about {CHECKPOINT_SECONDS:g} s, so progress is saved at least that often",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start over: replace the output of an earlier run, finished or not, or any file at --output",
    )
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="request header, e.g. an access key (repeatable)",
    )
    parser.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="send the access key held in this environment variable (restricted servers)",
    )
    parser.add_argument(
        "--traffic",
        choices=list(PRIORITY_LEVELS),
        default=BULK,
        help="traffic class of the job's requests (default bulk: the server answers queries first)",
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a request still waiting in the server's queue after this long is dropped and fails (default: none)",
    )
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--retries", type=int, default=8, help="tries per request when the server is away")
    parser.add_argument("--wait-ready", type=float, default=0.0, help="seconds to wait for the server")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.input is None and not args.list_models:
        parser.error("the input file is required (or --list-models)")
    return args


def say(message: str) -> None:
    print(f"clip-triton-embed: {message}", file=sys.stderr, flush=True)


def progress_bar(disabled: bool):
    """(update(offset, embedded_now, size), close()): a bar over the input's bytes, with ETA and docs/s."""
    if disabled:
        return (lambda offset, embedded_now, size: None), (lambda: None)
    import time

    from tqdm import tqdm

    bar = tqdm(total=None, unit="B", unit_scale=True, desc="embedding", file=sys.stderr)
    started = time.monotonic()

    def update(offset, embedded_now, size):
        bar.total = size
        bar.update(offset - bar.n)
        bar.set_postfix(docs_per_s=f"{embedded_now / max(time.monotonic() - started, 1e-9):.0f}", refresh=False)

    return update, bar.close


def list_models(args, headers: dict[str, str]) -> int:
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    try:
        with CLIPClient(
            args.url,
            protocol=args.protocol,
            model=args.model,
            headers=headers,
            api_key=api_key,
            retries=args.retries,
            wait_ready=args.wait_ready,
        ) as client:
            for info in client.models():
                print(f"{info.name}\t{info.dim}\t{info.weights}\t{info.checkpoint}")
    except CLIPClientError as exc:
        say(str(exc))
        return 3
    return 0


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the CLI prints it: its class and message on one line, without the source line
    Python's default echoes (which lands in the middle of the progress bar)."""
    return f"{category.__name__}: {message}\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.formatwarning = one_line_warning
    try:
        headers = header_arguments(args.header)
    except ValueError as exc:
        say(str(exc))
        return 2
    if args.list_models:
        return list_models(args, headers)
    try:
        input_format = detect_input_format(args.input, args.input_format, args.text_field is not None)
    except OSError as exc:
        say(f"{args.input}: {exc.strerror or exc}")
        return 2
    output_format = detect_output_format(args.output, args.output_format)
    text_field = args.text_field or ("image" if args.images else "text")
    update, close_bar = progress_bar(args.no_progress or args.input == "-")
    try:
        with CLIPClient(
            args.url,
            protocol=args.protocol,
            model=args.model,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            timeout=args.timeout,
            retries=args.retries,
            headers=headers,
            wait_ready=args.wait_ready,
            normalize=args.normalize,
            api_key=os.environ.get(args.api_key_env) if args.api_key_env else None,
            traffic=args.traffic,
            queue_timeout=args.queue_timeout,
        ) as client:
            result = run_job(
                client,
                args.input,
                args.output,
                output_format,
                jsonl=input_format == "jsonl",
                text_field=text_field,
                chunk_lines=args.chunk_lines,
                restart=args.restart,
                images=args.images,
                report=say,
                progress=update,
            )
    except JobError as exc:
        close_bar()
        say(str(exc))
        return 2
    except CLIPClientError as exc:
        close_bar()
        say(f"{exc}\nthe lines written so far are kept: run the same command to continue")
        return 3
    except KeyboardInterrupt:
        close_bar()
        say("interrupted: run the same command to continue where it stopped")
        return 130
    close_bar()
    c = result.counts
    missing = "without an image" if args.images else "without text"
    if result.already_done:
        say(
            f"this job already finished: {c.total} lines, {c.embedded} embedded, {c.no_text} {missing}, "
            f"{c.bad_line} bad, {c.failed} failed -> {args.output} ({output_format}); nothing to do "
            "(--restart embeds it again)"
        )
        return 1 if c.bad_line or c.failed else 0
    resumed = f" (resumed after line {result.resumed_from_line})" if result.resumed_from_line else ""
    rate = (result.embedded_now / result.seconds) if result.seconds > 0 else 0.0
    say(
        f"{c.total} lines{resumed}: {c.embedded} embedded, {c.no_text} {missing}, {c.bad_line} bad, "
        f"{c.failed} failed, in {result.seconds:.1f} s ({rate:.0f} docs/s) -> {args.output} ({output_format})"
    )
    return 1 if c.bad_line or c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
