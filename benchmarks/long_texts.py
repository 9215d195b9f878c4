"""What a long text costs the tokenizer, next to a caption, on one server in one run.

    python -m benchmarks.long_texts [--repeat 5]

Sends requests of 12 texts each (1 MB of words, one 500k-letter word, 1 MB of CJK, and plain
captions) to `clip_tokenizer`, and prints seconds per request, the ratio to the caption request,
and the resident memory of the tokenizer's Python-backend processes before and after.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.soak import rss_mb
from clip_triton_client.transport import text_tensor
from clip_triton_contract.names import TEXT_INPUT, TOKENIZER_MODEL
from clip_triton_ops.sample_texts import captions

CASES = {
    "12 captions": None,
    "12 x 1 MB of words": ("a photo of a cat on a mat " * 40000)[:1_000_000],
    "12 x one 500k-letter word": "abcdefghij" * 50_000,
    "12 x 1 MB of CJK": "\u4e2d\u6587\u5b57" * 111_000,
}


def main(argv=None) -> int:
    import tritonclient.grpc as grpc

    from clip_triton import LocalTritonServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    with LocalTritonServer.on_free_ports() as srv:
        client = grpc.InferenceServerClient(srv.grpc_url)
        rss_before = rss_mb(srv.stub_pids())
        seconds = {}
        for name, text in CASES.items():
            texts = captions(12, seed=1) if text is None else [text] * 12
            batch = text_tensor(texts)
            tensor = grpc.InferInput(TEXT_INPUT, list(batch.shape), "BYTES")
            tensor.set_data_from_numpy(batch)
            runs = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                client.infer(TOKENIZER_MODEL, [tensor])
                runs.append(time.perf_counter() - t0)
            seconds[name] = statistics.median(runs)
        rss_after = rss_mb(srv.stub_pids())
        client.close()
    base = seconds["12 captions"]
    for name, value in seconds.items():
        print(f"{name:28s} {value * 1000:9.1f} ms/request   x{value / base:6.1f} the caption request")
    print(f"tokenizer stubs resident memory: {rss_before:.0f} MB before, {rss_after:.0f} MB after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
