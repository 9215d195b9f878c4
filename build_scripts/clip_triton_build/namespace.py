"""python -m clip_triton_build.namespace: a copy of the built repository with namespaced model names,
for a shared fleet where several teams' models live in one Triton (`team_a_clip_text`, ...).

    python -m clip_triton_build.namespace --prefix search_ --dest /fleet/models

Model folders, `name:` fields, the ensemble's steps, the tokenizer's fallback model and every
configs/*.pbtxt variant are renamed; artifacts are copied (or hard-linked when on the same
filesystem).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from google.protobuf import text_format

from .repository import BUILT_REPOSITORY, read_config
from .spec import FALLBACK_PARAMETER, MODELS


def _copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def namespaced(source: Path, dest: Path, prefix: str) -> list[str]:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", prefix):
        raise ValueError(f"prefix {prefix!r}: letters, digits, '_', '.', '-' only")
    names = {m: prefix + m for m in MODELS}
    for model in MODELS:
        src_dir, dst_dir = source / model, dest / names[model]
        if dst_dir.exists():
            shutil.rmtree(dst_dir)
        for path in src_dir.rglob("*"):
            target = dst_dir / path.relative_to(src_dir)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".pbtxt":
                config = read_config(path)
                config.name = names[model]
                for step in config.ensemble_scheduling.step:
                    step.model_name = names.get(step.model_name, step.model_name)
                if FALLBACK_PARAMETER in config.parameters:  # the model the tokenizer calls
                    fallback = config.parameters[FALLBACK_PARAMETER]
                    fallback.string_value = names.get(fallback.string_value, fallback.string_value)
                target.write_text(
                    f"# {prefix!r}-namespaced copy of {path.relative_to(source)}\n"
                    + text_format.MessageToString(config)
                )
            else:
                _copy(path, target)
    return [names[m] for m in MODELS]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clip_triton_build.namespace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prefix", required=True, help="e.g. search_ -> search_clip_text")
    parser.add_argument("--dest", type=Path, required=True, help="repository folder to write into (shared is fine)")
    parser.add_argument("--source", type=Path, default=BUILT_REPOSITORY)
    args = parser.parse_args(argv)
    for name in namespaced(args.source, args.dest, args.prefix):
        print(f"{args.dest / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
