"""clip-triton-embed on big files: streaming, resumable, honest about bad lines; against a real server."""

import io
import itertools
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clip_triton import LocalTritonServer
from clip_triton_client import cli
from clip_triton_contract.names import ENSEMBLE_MODEL
from helpers import text_array, triton_infer


def embed_direct(server, texts, model: str = ENSEMBLE_MODEL) -> np.ndarray:
    """Each text as its own request: the reference a bulk job's rows must equal."""
    return np.concatenate(
        [triton_infer("grpc", server.grpc_url, model, {"TEXT": text_array([t])}, ["EMBEDDING"])[0] for t in texts]
    )


def run_cli(args, stdin: bytes | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clip_triton_client.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=1800,
        **kwargs,
    )


def default_signals() -> None:
    """In the child before it runs: SIGINT as a terminal delivers it. A shell that starts the test
    suite in the background hands its children SIGINT ignored, and Python keeps it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(args) -> subprocess.Popen:
    """clip-triton-embed running in the background, to be interrupted (run_cli waits for it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "clip_triton_client.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_signals,
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# Words CLIP's tokenizer keeps whole, one token each. Three of them make 216,000 distinct lines of
# 5 tokens (with start and end), where "c199999" takes 9 (each digit is a token): the encoder's CPU
# time grows with tokens, and the resume test is about the job, not about long texts.
ONE_TOKEN_WORDS = (
    "red blue green black white brown pink gold dark old small big tall cat dog horse bird fish cow sheep "
    "duck bear lion tiger wolf fox mouse deer frog owl park beach street garden forest river lake field road city "
    "house room bridge hill farm boat train shop market snow rain sun moon tree flower stone water fire sky night"
).split()


def distinct_short_texts(n: int) -> list[str]:
    assert n <= len(ONE_TOKEN_WORDS) ** 3
    return [" ".join(words) for words in itertools.islice(itertools.product(ONE_TOKEN_WORDS, repeat=3), n)]


def test_a_line_that_is_not_utf8_is_reported_by_number_and_every_other_line_is_embedded(server, tmp_path, capsys):
    texts = [f"caption number {i} of a long file" for i in range(3003)]
    data = "\n".join(texts).encode().split(b"\n")
    data[1499] = b"caption number 1499 \xff broken"
    source = tmp_path / "captions.txt"
    source.write_bytes(b"\n".join(data) + b"\n")
    out = tmp_path / "out.jsonl"
    assert cli.main([str(source), "-o", str(out), "--url", server.grpc_url, "--no-progress"]) == 1  # partial
    err = capsys.readouterr().err
    assert "line 1500: not valid UTF-8 (byte 0xff at column 21)" in err
    assert "3003 lines: 3002 embedded, 0 without text, 1 bad, 0 failed" in err
    rows = read_jsonl(out)
    assert [r["line"] for r in rows] == [n for n in range(1, 3004) if n != 1500]
    sample = [0, 1, 1498, 1500, 3002]
    got = np.array([next(r for r in rows if r["line"] == i + 1)["embedding"] for i in sample])
    assert np.abs(got - embed_direct(server, [texts[i] for i in sample])).max() <= 1e-5


def test_a_malformed_header_is_refused_before_any_work(server, tmp_path):
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("a photo of a cat\n")
    result = run_cli([str(source), "-o", str(out), "--url", server.grpc_url, "--header", "x-api-key"])
    assert result.returncode == 2
    assert b"--header needs KEY=VALUE, got 'x-api-key'" in result.stderr
    assert not out.exists()


def test_jsonl_on_stdin_passes_records_without_text_through(server):
    stdin = b'{"id":1,"text":"hello"}\n{"id":2}\n{"id":3,"text":""}\nnot json\n{"id":4,"text":"world"}\n'
    for args in (["--text-field", "text"], []):  # --text-field, or the JSON content itself, means JSONL
        result = run_cli(["-", "--url", server.grpc_url, "--no-progress", *args], stdin=stdin)
        assert result.returncode == 1, result.stderr  # line 4 is not JSON
        rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
        assert [r["id"] for r in rows] == [1, 2, 3, 4]
        assert "embedding" not in rows[1] and "embedding" not in rows[2]  # the seed's rule: no text, no embedding
        expected = embed_direct(server, ["hello", "world"])
        assert np.abs(np.array([rows[0]["embedding"], rows[3]["embedding"]]) - expected).max() <= 1e-5
        assert b"line 4: not valid JSON" in result.stderr


def test_npy_rows_follow_input_lines_and_jsonl_records_keep_their_fields(server, tmp_path, capsys):
    lines = tmp_path / "texts.txt"
    lines.write_bytes(b"a cat\n\na dog\n\xfe\n")
    out_npy = tmp_path / "out.npy"
    assert cli.main([str(lines), "-o", str(out_npy), "--url", server.grpc_url, "--no-progress"]) == 1
    vectors = np.load(out_npy)
    assert vectors.shape == (4, 512)
    assert np.isnan(vectors[[1, 3]]).all()  # an empty line and a bad one: rows without an embedding
    assert np.abs(vectors[[0, 2]] - embed_direct(server, ["a cat", "a dog"])).max() <= 1e-5

    records = tmp_path / "docs.jsonl"
    records.write_text(
        json.dumps({"id": 1, "text": "a cat", "url": "u1"}) + "\n" + json.dumps({"id": 2, "text": "a dog"}) + "\n"
    )
    out_jsonl = tmp_path / "out.jsonl"
    assert (
        cli.main(
            [
                str(records),
                "-o",
                str(out_jsonl),
                "--url",
                server.http_url,
                "--protocol",
                "http",
                "--no-progress",
                "--normalize",
            ]
        )
        == 0
    )
    rows = read_jsonl(out_jsonl)
    assert [(r["id"], r.get("url")) for r in rows] == [(1, "u1"), (2, None)]
    assert np.allclose(np.linalg.norm(np.array([r["embedding"] for r in rows]), axis=1), 1.0, atol=1e-5)


def test_parquet_parts_hold_ids_and_embeddings_row_aligned(server, tmp_path):
    import pyarrow.parquet as pq

    source = tmp_path / "docs.jsonl"
    docs = [{"id": f"doc-{i}", "text": f"document {i}"} if i % 7 else {"id": f"doc-{i}"} for i in range(50)]
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "index"
    assert (
        cli.main(
            [
                str(source),
                "-o",
                str(out),
                "--format",
                "parquet",
                "--chunk-lines",
                "16",
                "--url",
                server.grpc_url,
                "--no-progress",
            ]
        )
        == 0
    )
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 4 and not (out / "_progress.json").exists()
    table = pq.read_table(out).sort_by("line").to_pylist()
    assert [json.loads(r["record"])["id"] for r in table] == [d["id"] for d in docs]
    assert all((r["embedding"] is None) == (i % 7 == 0) for i, r in enumerate(table))
    embedded = [i for i in range(50) if i % 7]
    got = np.array([table[i]["embedding"] for i in embedded[:5]])
    assert np.abs(got - embed_direct(server, [docs[i]["text"] for i in embedded[:5]])).max() <= 1e-5


def wait_for_progress(progress_file: Path, lines: int, process: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        try:
            if json.loads(progress_file.read_text())["lines"] >= lines:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    pytest.fail(f"no progress past line {lines} in {timeout} s")


# The job, not the encoder, is what this test is about: it runs on the image tests' server, whose
# B/32-shaped checkpoint has two text layers (tests/checkpoints.py), so 200,000 lines take about a
# sixth of the encoder time the default 12-layer tower needs (~15 minutes on a slow 2-core CPU).
SMALL_TEXT_MODEL = "b32"


@pytest.mark.timeout(1800)
def test_a_job_killed_mid_way_resumes_and_writes_every_line_exactly_once(image_server, tmp_path):
    """200,000 lines; the machine 'stops' (SIGKILL) mid-way; the same command finishes the job."""
    server, n = image_server, 200_000
    texts = distinct_short_texts(n)
    source = tmp_path / "captions.txt"
    source.write_text("".join(f"{text}\n" for text in texts))
    out = tmp_path / "out.jsonl"
    args = [
        str(source),
        "-o",
        str(out),
        "--url",
        server.grpc_url,
        "--no-progress",
        "--batch-size",
        "128",
        "--chunk-lines",
        "4096",
        "--model",
        SMALL_TEXT_MODEL,
    ]
    first = start_cli(args)
    wait_for_progress(Path(str(out) + ".progress.json"), n // 3, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = run_cli(args)
    assert second.returncode == 0, second.stderr.decode()
    assert re.search(rb"200000 lines \(resumed after line \d+\): 200000 embedded", second.stderr), second.stderr
    sample = [0, 1, n // 3, n // 3 + 1, n // 2, n - 1]
    numbers, got = [], {}
    with out.open(encoding="utf-8") as rows:  # 2 GB of JSON: one row at a time
        for i, line in enumerate(rows):
            row = json.loads(line)
            numbers.append(row["line"])
            if i in sample:
                assert row["text"] == texts[i]
                got[i] = row["embedding"]
    assert numbers == list(range(1, n + 1))  # none missing, none twice, in order
    expected = embed_direct(server, [texts[i] for i in sample], SMALL_TEXT_MODEL)
    assert np.abs(np.array([got[i] for i in sample]) - expected).max() <= 1e-5


def test_ctrl_c_then_the_same_command_continues_an_npy_job(server, tmp_path):
    n = 12_000
    source = tmp_path / "captions.txt"
    source.write_text("".join(f"text {i}\n" for i in range(n)))
    out = tmp_path / "out.npy"
    args = [str(source), "-o", str(out), "--url", server.grpc_url, "--no-progress", "--chunk-lines", "1000"]
    first = start_cli(args)
    wait_for_progress(Path(str(out) + ".progress.json"), 3000, first)
    first.send_signal(signal.SIGINT)
    assert first.wait(120) == 130
    assert b"run the same command to continue" in first.stderr.read()
    assert np.load(out).shape[0] >= 3000  # what was written is a loadable .npy already
    assert run_cli(args).returncode == 0
    vectors = np.load(out)
    assert vectors.shape == (n, 512) and np.isfinite(vectors).all()
    sample = [0, 2999, 3000, 6000, n - 1]
    assert np.abs(vectors[sample] - embed_direct(server, [f"text {i}" for i in sample])).max() <= 1e-5
    assert len({row.tobytes() for row in vectors[::97]}) == len(vectors[::97])


def test_a_server_that_goes_away_leaves_a_job_the_same_command_finishes(server, tmp_path):
    source = tmp_path / "captions.txt"
    source.write_text("".join(f"item {i}\n" for i in range(3000)))
    out = tmp_path / "out.jsonl"
    srv = LocalTritonServer.on_free_ports()
    srv.start()
    try:
        args = [
            str(source),
            "-o",
            str(out),
            "--url",
            srv.grpc_url,
            "--no-progress",
            "--chunk-lines",
            "500",
            "--retries",
            "1",
        ]
        first = start_cli(args)
        wait_for_progress(Path(str(out) + ".progress.json"), 1000, first)
        srv.stop()
        assert first.wait(300) == 3
        assert b"run the same command to continue" in first.stderr.read()
        srv.start()
        assert run_cli(args).returncode == 0
    finally:
        srv.stop()
    rows = read_jsonl(out)
    assert [r["line"] for r in rows] == list(range(1, 3001))
    assert np.abs(np.array(rows[2999]["embedding"]) - embed_direct(server, ["item 2999"])[0]).max() <= 1e-5


def test_a_finished_job_run_again_says_so_and_rewrites_nothing(server, tmp_path):
    source = tmp_path / "captions.txt"
    source.write_text("".join(f"caption {i}\n" for i in range(500)))
    out = tmp_path / "out.npy"
    args = [str(source), "-o", str(out), "--url", server.grpc_url, "--no-progress"]
    assert run_cli(args).returncode == 0
    finished = (out.read_bytes(), out.stat().st_mtime_ns)
    again = run_cli(args)
    assert again.returncode == 0, again.stderr
    assert b"this job already finished: 500 lines, 500 embedded" in again.stderr
    assert (out.read_bytes(), out.stat().st_mtime_ns) == finished
    restarted = run_cli([*args, "--restart"])
    assert restarted.returncode == 0 and b"500 lines: 500 embedded" in restarted.stderr
    assert out.stat().st_mtime_ns != finished[1] and np.array_equal(np.load(out), np.load(io.BytesIO(finished[0])))


def test_an_output_no_run_of_the_job_is_writing_is_replaced_only_when_asked(server, tmp_path):
    source = tmp_path / "captions.txt"
    source.write_text("a photo of a cat\n")
    out = tmp_path / "notes.jsonl"
    out.write_text("someone's notes\n")
    refused = run_cli([str(source), "-o", str(out), "--url", server.grpc_url, "--no-progress"])
    assert refused.returncode == 2 and b"already exists" in refused.stderr and b"--restart" in refused.stderr
    assert out.read_text() == "someone's notes\n"
    source.write_text("a photo of a cat\na dog\n")  # another job's output is not this one's either
    args = [str(source), "-o", str(out), "--url", server.grpc_url, "--no-progress", "--restart"]
    assert run_cli(args).returncode == 0 and len(read_jsonl(out)) == 2
    source.write_text("a photo of a cat\n")
    assert run_cli(args[:-1]).returncode == 2 and len(read_jsonl(out)) == 2


def test_progress_is_saved_after_the_first_requests_not_after_a_big_chunk(server, tmp_path):
    """On a CPU server a chunk of --chunk-lines (8192) takes minutes; chunks follow the server's
    rate instead, so the first resume point comes after one round of requests, and a kill right
    after it loses nothing."""
    n = 12_000
    texts = distinct_short_texts(n)
    source = tmp_path / "captions.txt"
    source.write_text("".join(f"{text}\n" for text in texts))
    out = tmp_path / "out.jsonl"
    args = [str(source), "-o", str(out), "--url", server.grpc_url, "--no-progress"]
    first = start_cli(args)
    progress = Path(str(out) + ".progress.json")
    wait_for_progress(progress, 1, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    saved = json.loads(progress.read_text())["lines"]
    assert 0 < saved < 8192
    second = run_cli(args)
    assert second.returncode == 0, second.stderr
    assert f"{n} lines (resumed after line {saved}): {n} embedded".encode() in second.stderr
    assert [r["line"] for r in read_jsonl(out)] == list(range(1, n + 1))
