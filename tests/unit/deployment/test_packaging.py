"""What users install: the client alone stays light, and shipped code never reaches into the
benchmarks or the tests."""

import ast
import re
import subprocess
import sys
from importlib import metadata

from helpers import REPO_ROOT

SHIPPED = {
    "clip_triton_client": REPO_ROOT / "client" / "clip_triton_client",
    "clip_triton": REPO_ROOT / "server" / "clip_triton",
    "clip_triton_build": REPO_ROOT / "build_scripts" / "clip_triton_build",
}
HEAVY = {"torch", "onnxruntime", "transformers", "tokenizers", "pytriton", "clip_triton", "clip_triton_build"}


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_the_client_distribution_depends_on_no_server_or_build_package():
    """As installed (client/pyproject.toml), extras included."""
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group().lower() for r in metadata.requires("clip-triton-client")}
    assert names == {"numpy", "tritonclient", "tqdm", "pyarrow", "pillow"}  # pillow: the images extra


def test_importing_the_client_and_its_cli_loads_nothing_heavy():
    code = (
        "import sys, clip_triton_client, clip_triton_client.cli, clip_triton_client.bulk;"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO_ROOT / "client"
        ).stdout.split()
    )
    assert "clip_triton_client" in loaded
    assert not loaded & HEAVY


def test_shipped_code_imports_neither_benchmarks_nor_tests():
    for package, folder in SHIPPED.items():
        for path in folder.rglob("*.py"):
            tops = {name.split(".")[0] for name in imported_modules(path)}
            assert not tops & {"benchmarks", "helpers", "conftest", "tests"}, path
            if package == "clip_triton_client":
                assert not tops & HEAVY, path  # the client never needs the server side
