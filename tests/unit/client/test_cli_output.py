"""What clip-triton-embed prints besides its progress bar."""

import subprocess
import sys


def test_a_warning_is_one_line_with_no_source_line_echoed():
    code = (
        "import warnings; from clip_triton_client import cli, RandomWeightsWarning;"
        "warnings.formatwarning = cli.one_line_warning;"
        "warnings.warn('built with RANDOM weights', RandomWeightsWarning)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == "RandomWeightsWarning: built with RANDOM weights\n"
