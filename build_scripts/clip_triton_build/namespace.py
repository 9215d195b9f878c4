"""python -m clip_triton_build.namespace: a copy of the built repository with namespaced model names,
for a shared fleet where several teams' models live in one Triton (`team_a_clip_text`, ...).

    python -m clip_triton_build.namespace --prefix search_ --dest /fleet/models

Every model folder (each checkpoint's, in a repository built with several), `name:` fields, the
ensembles' steps and lists of models, the tokenizer's fallback model and every configs/*.pbtxt
variant are renamed; artifacts are copied (or hard-linked when on the same filesystem).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from google.protobuf import text_format

from clip_triton_contract.names import (
    FALLBACK_PARAMETER,
    LOAD_ORDER,
    MODEL_NAME_PATTERN,
    SIBLINGS_PARAMETER,
)

from .repository import BUILT_REPOSITORY, cuda_ops_library, read_config


def _copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def model_folders(repository: Path) -> list[str]:
    """The repository's model folders in load order (spec.MODELS: what a model calls before it),
    each checkpoint's models one role after another."""
    folders = [p for p in Path(repository).iterdir() if (p / "config.pbtxt").is_file()]

    def role(folder: Path) -> int:
        found = (i for i, m in enumerate(LOAD_ORDER) if folder.name.endswith(m))
        return next(found, len(LOAD_ORDER) - 1)

    return [p.name for p in sorted(folders, key=lambda p: (role(p), p.name))]


def renamed(source: Path, dest: Path, names: dict[str, str], note: str) -> list[str]:
    """Copy each model folder `m` of `names` from `source` to `dest / names[m]`, renaming it in
    every config (its `name`, ensemble steps, the tokenizer's fallback model, the ensemble's list of
    models; configs/*.pbtxt variants included); a model `source` lacks is skipped. Returns the new
    names of those copied."""
    copied = []
    for model, new_name in names.items():
        src_dir, dst_dir = source / model, dest / new_name
        if not src_dir.is_dir():
            continue
        copied.append(new_name)
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
                if SIBLINGS_PARAMETER in config.parameters:
                    siblings = config.parameters[SIBLINGS_PARAMETER]
                    listed = [n for n in siblings.string_value.split(",") if n]
                    siblings.string_value = ",".join(names.get(n, n) for n in listed)
                target.write_text(f"# {note} of {path.relative_to(source)}\n" + text_format.MessageToString(config))
            else:
                _copy(path, target)
    return copied


def namespaced(source: Path, dest: Path, prefix: str) -> list[str]:
    """Every model of the built repository `source` copied into `dest` as `prefix` + its name, with
    the ops library the GPU encoders call (at dest's root, where LocalTritonServer preloads it)."""
    if not re.fullmatch(MODEL_NAME_PATTERN, prefix):
        raise ValueError(f"prefix {prefix!r}: letters, digits, '_', '.', '-' only")
    dest.mkdir(parents=True, exist_ok=True)
    library, shared = cuda_ops_library(source), cuda_ops_library(dest)
    if library.is_file() and not shared.exists():  # a fleet's repository shares one: it is preloaded once
        _copy(library, shared)
    names = {m: prefix + m for m in model_folders(source)}
    return renamed(source, dest, names, f"{prefix!r}-namespaced copy")


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
