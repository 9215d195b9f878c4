"""Local stand-in for Triton's C++ `onnxruntime` backend, run by the Python backend.

NOT the real backend. The NGC tritonserver image ships the C++ onnxruntime backend, which wins
over this file there. The tritonserver in the `nvidia-pytriton` wheel has no onnxruntime backend,
so the local runner puts this file at `<backend-dir>/onnxruntime/model.py`: Triton then runs
models with `backend: "onnxruntime"` on the Python backend with this code, against the same
`model.onnx` and the same config. It honours what this repository's configs use (inputs and
outputs by name, dynamic batching, KIND_CPU / KIND_GPU, `intra_op_thread_count`) and nothing else
(no TensorRT accelerator, no `optimization` block).
"""

import sys
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from standin import BatchedStandIn  # noqa: E402


class TritonPythonModel(BatchedStandIn):
    backend_name = "onnxruntime"
    default_filename = "model.onnx"

    def load(self, model_path, kind, device_id, params):
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_thread_count") or 0)
        if threads:
            options.intra_op_num_threads = threads
        if kind == "GPU":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise pb_utils.TritonModelException(
                    "KIND_GPU instance, but this onnxruntime has no CUDAExecutionProvider "
                    "(install onnxruntime-gpu, or serve the `cpu` config variant)")
            providers = [("CUDAExecutionProvider", {"device_id": device_id})]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)

    def run(self, feeds):
        return self.session.run(self.outputs, feeds)
