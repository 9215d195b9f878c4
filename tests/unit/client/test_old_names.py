"""The client's names before images came still work, and say what replaced them."""

import subprocess
import sys
from pathlib import Path


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-c", code], capture_output=True, text=True
    )


def test_the_old_package_warns_and_hands_back_the_new_objects():
    done = run_python(
        "import clip_text_client, clip_text_client.client as old, clip_text_client.errors as old_errors;"
        "import clip_triton_client as new, clip_triton_client.errors as new_errors;"
        "assert clip_text_client.CLIPTextClient is new.CLIPClient is old.CLIPClient;"
        "assert old_errors.InvalidItemError is new_errors.InvalidItemError;"
        "assert clip_text_client.DEFAULT_MODEL == new.DEFAULT_MODEL"
    )
    assert done.returncode == 0, done.stderr
    assert "DeprecationWarning: clip_text_client is deprecated: import clip_triton_client" in done.stderr


def test_the_new_package_imports_without_a_warning():
    done = run_python("import clip_triton_client, clip_triton_client.cli, clip_triton_client.bulk")
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr


def test_the_old_module_cli_still_runs_the_bulk_command():
    done = subprocess.run(
        [sys.executable, "-m", "clip_text_client.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: clip-triton-embed" in done.stdout
    assert "clip-text-embed is deprecated: run clip-triton-embed" in done.stderr


def test_both_console_scripts_are_installed():
    bin_dir = Path(sys.executable).parent
    new = subprocess.run([bin_dir / "clip-triton-embed", "--help"], capture_output=True, text=True, check=True)
    old = subprocess.run([bin_dir / "clip-text-embed", "--help"], capture_output=True, text=True, check=True)
    assert new.stdout == old.stdout
    assert new.stderr == ""
    assert "deprecated" in old.stderr
