"""The old `clip-text-embed` command and `python -m clip_text_client.cli`: the same job as
`clip-triton-embed`, after a deprecation notice on stderr."""

import sys

from clip_triton_client.cli import main as _main


def main(argv: list[str] | None = None) -> int:
    print("clip-text-embed is deprecated: run clip-triton-embed (same arguments)", file=sys.stderr, flush=True)
    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
