"""Local stand-in for Triton's C++ `pytorch` (libtorch) backend, run by the Python backend.

NOT the real backend: the NGC image's libtorch backend wins there. This runs the same
TorchScript `model.pt` with the `torch` package: inputs are passed to forward() in config order,
outputs are taken in config order (the libtorch backend's ordering rule for names without the
`__<index>` suffix). Honours KIND_CPU / KIND_GPU, `INTRA_OP_THREAD_COUNT` and
`DISABLE_OPTIMIZED_EXECUTION`.
"""

import sys
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from standin import BatchedStandIn  # noqa: E402


class TritonPythonModel(BatchedStandIn):
    backend_name = "pytorch"
    default_filename = "model.pt"

    def load(self, model_path, kind, device_id, params):
        threads = int(params.get("INTRA_OP_THREAD_COUNT") or 0)
        if threads:
            torch.set_num_threads(threads)
        if kind == "GPU":
            if not torch.cuda.is_available():
                raise pb_utils.TritonModelException("KIND_GPU instance, but torch sees no CUDA device")
            self.device = torch.device("cuda", device_id)
        else:
            self.device = torch.device("cpu")
        self.module = torch.jit.load(str(model_path), map_location=self.device).eval()
        # the libtorch backend's DISABLE_OPTIMIZED_EXECUTION parameter
        self.optimized = params.get("DISABLE_OPTIMIZED_EXECUTION", "false").lower() != "true"

    def run(self, feeds):
        with torch.inference_mode(), torch.jit.optimized_execution(self.optimized):
            args = [torch.from_numpy(feeds[name]).to(self.device) for name, _ in self.inputs]
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [t.detach().cpu().numpy() for t in out]
