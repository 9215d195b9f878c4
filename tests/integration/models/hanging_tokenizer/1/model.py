"""A test-only stand-in for clip_tokenizer_python that hangs without dying, as a stuck stub would:
each execution waits until the file `release` appears beside the repository's models, then
fails its requests. tests/integration/test_tokenizer_handover.py serves it in a copy of the
built repository; nothing shipped names it."""

import time
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.release = Path(args["model_repository"]).parent / "release"

    def execute(self, requests):
        while not self.release.exists():
            time.sleep(0.05)
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("released")) for _ in requests]
