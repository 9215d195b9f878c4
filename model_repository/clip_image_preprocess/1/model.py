"""clip_image_preprocess: IMAGE (encoded image files) -> pixel_values, the checkpoint's own
preprocessing (its preprocessor_config.json, as HF's PIL-based CLIP image processor applies it).
KIND_CPU instances run preprocessing.py's steps in Pillow and numpy; KIND_GPU instances (the GPU
variant) run on_gpu.py's on the card and hand their pixels on there.

Every request Triton hands to execute() gets its own response, in order; a bad image fails its own
request with an INVALID_ARG error naming its index and what is wrong, and leaves the other
requests untouched.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).parent))  # this model's own modules, beside it

from preprocessing import InvalidImage, Preprocessing, decode, describe, read_header  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / params["preprocessor_file"]
        if not path.is_file():
            raise pb_utils.TritonModelException(
                f"{path} is missing: run `python -m clip_triton_build` with a checkpoint that has a vision tower"
            )
        self.max_bytes = int(params["max_image_bytes"])
        self.max_pixels = int(params["max_image_pixels"])
        self.preprocess = Preprocessing(json.loads(path.read_text()), self.max_pixels)
        # tensor names and dtype: this model's config.pbtxt is their home here
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        output = pb_utils.get_output_config_by_name(config, self.output_name)
        self.output_dtype = pb_utils.triton_string_to_numpy(output["data_type"])
        self.output_dims = tuple(output["dims"])
        self.on_gpu = None
        if args["model_instance_kind"] == "GPU":
            from on_gpu import OnGpu

            device = int(args["model_instance_device_id"])
            self.on_gpu = OnGpu(self.preprocess, self.output_dtype, int(params["gpu_chunk_pixels"]), device)

    def _files(self, request) -> list[bytes]:
        try:
            files = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        except Exception as exc:  # e.g. a BYTES length prefix past the data: this request's fault alone
            raise InvalidImage(f"{self.input_name} is not a well-formed BYTES tensor: {exc}") from None
        if files.ndim != 2 or files.shape[1] != 1:
            raise InvalidImage(f"{self.input_name} must have shape [batch, 1], got {list(files.shape)}")
        return [data.encode() if isinstance(data, str) else bytes(data) for data in files[:, 0]]

    def _pixels(self, files: list[bytes]) -> np.ndarray:
        out = np.empty((len(files), *self.output_dims), dtype=self.output_dtype)
        for index, data in enumerate(files):
            name = f"{self.input_name}[{index}]"
            image = decode(read_header(data, name, self.max_bytes, self.max_pixels), name)
            try:
                out[index] = self.preprocess(image)
            except Exception as exc:
                raise InvalidImage(f"{describe(image, name)} cannot be preprocessed: {exc}") from None
        return out

    def _output(self, files: list[bytes]):
        if self.on_gpu is None:
            return pb_utils.Tensor(self.output_name, self._pixels(files))
        headers = [
            read_header(data, f"{self.input_name}[{index}]", self.max_bytes, self.max_pixels)
            for index, data in enumerate(files)
        ]
        return pb_utils.Tensor.from_dlpack(self.output_name, self.on_gpu(files, headers, self.input_name))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                output = self._output(self._files(request))
            except InvalidImage as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse([output]))
        return responses
