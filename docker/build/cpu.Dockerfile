# The CPU flavour's build step: the GPU build image's job (the same entrypoint.sh writing the same
# volume) on a plain Debian or Python image, with PyTorch's CPU build: model.onnx (what the CPU
# server serves), model.pt traced on the CPU, no fp16 export.
ARG BASE_IMAGE=python:3.12-slim-bookworm
FROM ${BASE_IMAGE}
# PyTorch's CPU wheels (the torch pinned in pyproject.toml); any index that has them
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# cmake, g++ and RapidJSON: the build compiles the tokenizer's C++ backend (native/CMakeLists.txt)
# hadolint ignore=DL3008
RUN apt-get update \
 && if ! command -v python3 >/dev/null 2>&1; then \
      apt-get install -y --no-install-recommends python3 python3-venv; \
    fi \
 && apt-get install -y --no-install-recommends cmake g++ make rapidjson-dev \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/build/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple torch==2.13.0 \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps open-clip-torch==3.3.0

COPY build_scripts/ /src/build_scripts/
COPY client/clip_triton_contract/ /src/client/clip_triton_contract/
COPY native/ /src/native/
COPY model_repository/ /src/model_repository/
COPY docker/build/entrypoint.sh /src/entrypoint.sh
# Triton's backend API headers: a mirror in the build context (docker/triton-sources/README.md),
# else fetched from GitHub at the pinned commit
COPY docker/triton-sources/ /opt/triton-src/

ENV PYTHONPATH=/src/build_scripts:/src/client \
    HF_HOME=/hf-cache \
    CLIP_TRITON_SOURCES=/opt/triton-src \
    CLIP_TORCHSCRIPT_DEVICE=cpu \
    CLIP_FP16=0
RUN if [ ! -d /opt/triton-src/core ]; then python -c "from pathlib import Path; \
from clip_triton_build.triton_sources import fetch_core_headers; fetch_core_headers(Path('/opt/triton-src'))"; fi
ENTRYPOINT ["/src/entrypoint.sh"]
