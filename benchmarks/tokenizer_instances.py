"""The clip_tokenizer model alone, at several instance counts (loaded through the repository API,
no file edited): is the Python tokenizer ever the bottleneck?

    python -m benchmarks.tokenizer_instances --instances 1,2,4
"""

import argparse
import sys

from benchmarks.load import format_row, measure
from clip_triton import LocalTritonServer
from clip_triton_contract.names import IDS_TENSOR, TOKENIZER_MODEL


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", default="1,2,4")
    parser.add_argument("--points", default="8x32,32x1", help="CONCURRENCYxTEXTS list")
    parser.add_argument("--duration", type=float, default=6.0)
    args = parser.parse_args(argv)
    points = [tuple(int(x) for x in p.split("x")) for p in args.points.split(",")]
    for count in (int(n) for n in args.instances.split(",")):
        with LocalTritonServer.on_free_ports(tokenizer_instances=count) as server:
            for concurrency, texts in points:
                result = measure(
                    server.grpc_url,
                    TOKENIZER_MODEL,
                    concurrency,
                    texts,
                    warmup=2,
                    duration=args.duration,
                    output=IDS_TENSOR,
                )
                print(f"instances={count} {format_row(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
