"""The build reads the hand-written repository and writes the servable one elsewhere: a build
never dirties the checkout, and never deletes a folder it did not write."""

import os
import shutil
import subprocess
import sys

from clip_triton_build.repository import BUILT_REPOSITORY
from clip_triton_build.spec import ONNX_FILE, TOKENIZER_BACKEND_LIBRARY, TOKENIZER_FILE
from clip_triton_build.triton_sources import SOURCES_ENV, mirror_path
from clip_triton_contract.names import ENCODER_MODEL, TOKENIZER_MODEL
from helpers import REPO_ROOT


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_a_fresh_clone_builds_and_git_status_stays_empty(tmp_path):
    """A clone of this checkout, with the working tree's uncommitted files laid over it and
    committed (so the clone's HEAD is what a fresh clone of main would be once they are), built with
    its own build code to the default output."""
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(REPO_ROOT), str(clone), cwd=tmp_path)
    for name in git("ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=REPO_ROOT).split("\0"):
        source, target = REPO_ROOT / name, clone / name
        if name and source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif name and target.is_file():  # deleted here, not yet committed
            target.unlink()
    git("add", "--all", cwd=clone)
    git(
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@localhost",
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        "the working tree",
        cwd=clone,
    )
    # the clone's clip_triton_build and contract, not ours
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(clone / "build_scripts"), str(clone / "client")])}
    mirror = mirror_path()  # the sources this checkout builds from
    if mirror is not None:
        env[SOURCES_ENV] = str(mirror)
    build = subprocess.run(
        [sys.executable, "-m", "clip_triton_build", "--format", "onnx"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    built = clone / BUILT_REPOSITORY.relative_to(REPO_ROOT)  # the clone's default output
    assert (built / ENCODER_MODEL / "1" / ONNX_FILE).is_file()
    assert (built / TOKENIZER_MODEL / "1" / TOKENIZER_FILE).is_file()
    assert (built / TOKENIZER_MODEL / TOKENIZER_BACKEND_LIBRARY).is_file()  # compiled from the clone's native/clip_bpe
    assert git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""
