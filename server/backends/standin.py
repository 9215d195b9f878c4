"""What the local stand-in backends (onnxruntime/, pytorch/) share: config reading and batched
execution with one answer per request, in order.

A dynamic batch runs as one call. If that call fails, each request is re-run alone, so only the
request that breaks the run gets an error and its neighbours still get their results.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class BatchedStandIn:
    backend_name = "stand-in"
    default_filename = ""

    def load(self, model_path: Path, kind: str, device_id: int, params: dict) -> None:
        raise NotImplementedError

    def run(self, feeds: dict) -> list:
        """feeds: input name -> ndarray; returns the outputs as ndarrays, in config order."""
        raise NotImplementedError

    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or self.default_filename
        model_path = Path(args["model_repository"]) / args["model_version"] / filename
        if not model_path.is_file():
            raise pb_utils.TritonModelException(f"{model_path} is missing: build the repository's artifacts first")
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.inputs = [(i["name"], pb_utils.triton_string_to_numpy(i["data_type"])) for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.load(model_path, args["model_instance_kind"], int(args["model_instance_device_id"]), params)

    def _run(self, feeds):
        return dict(zip(self.outputs, self.run(feeds)))

    def execute(self, requests):
        batches = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy().astype(dtype, copy=False)
             for name, dtype in self.inputs}
            for r in requests
        ]
        sizes = [len(batch[self.inputs[0][0]]) for batch in batches]
        try:
            merged = {name: np.concatenate([b[name] for b in batches]) for name, _ in self.inputs}
            results = self._run(merged)
            splits = np.cumsum(sizes)[:-1]
            pieces = {name: np.split(value, splits) for name, value in results.items()}
            per_request = [{name: pieces[name][i] for name in pieces} for i in range(len(batches))]
        except Exception:
            per_request = []
            for batch in batches:
                try:
                    per_request.append(self._run(batch))
                except Exception as exc:
                    per_request.append(exc)
        responses = []
        for result in per_request:
            if isinstance(result, Exception):
                message = f"{self.backend_name} stand-in backend: {str(result).strip().splitlines()[0]}"
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)))
            else:
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in result.items()]))
        return responses
