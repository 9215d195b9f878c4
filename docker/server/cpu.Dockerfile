# The CPU flavour's server: the local runtime's tritonserver (the nvidia-pytriton wheel's, with
# Triton's C++ onnxruntime backend built from the r24.10 sources as clip_triton.cxx_backends builds
# it) on a plain Debian or Python image, installed like NGC's (clip_triton.install), started by the
# same docker/server/start.sh as the GPU image.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && if ! command -v python3 >/dev/null 2>&1; then \
      apt-get install -y --no-install-recommends python3 python3-venv; \
    fi \
 && apt-get install -y --no-install-recommends cmake g++ make rapidjson-dev googletest \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY docker/server/requirements.txt docker/server/cpu-requirements.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/cpu-requirements.txt
COPY client/clip_triton_client/ /src/client/clip_triton_client/
COPY client/clip_triton_contract/ /src/client/clip_triton_contract/
COPY build_scripts/clip_triton_build/ /src/build_scripts/clip_triton_build/
COPY runtime/clip_triton/ /src/runtime/clip_triton/
COPY ops/clip_triton_ops/ /src/ops/clip_triton_ops/
# A mirror of the Triton sources when the build context has one (docker/triton-sources/README.md),
# else GitHub at the pinned commits
COPY docker/triton-sources/ /opt/triton-src/
RUN if [ -d /opt/triton-src/core ]; then export CLIP_TRITON_SOURCES=/opt/triton-src; fi \
 && PYTHONPATH=/src/runtime:/src/ops:/src/build_scripts:/src/client python -m clip_triton.install /opt/tritonserver

FROM ${BASE_IMAGE}
# curl for the healthcheck; Debian's Python where the base has none, with its shared library (the
# Python backend's stub links against libpython)
# hadolint ignore=DL3008
RUN apt-get update \
 && if ! command -v python3 >/dev/null 2>&1; then \
      apt-get install -y --no-install-recommends python3 \
      && apt-get install -y --no-install-recommends "lib$(python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])')"; \
    fi \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/tritonserver /opt/tritonserver
COPY docker/server/start.sh /usr/local/bin/clip-tritonserver
ENV PATH=/opt/tritonserver/bin:/opt/venv/bin:$PATH
CMD ["clip-tritonserver"]
