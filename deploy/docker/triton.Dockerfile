# syntax=docker/dockerfile:1.7
# The Triton image the manifests run: NGC Triton 24.10 (Triton 2.51, the server version of the local
# stack) + onnxruntime for the CPU models (`--target cpu`: triton_models/python_backend/model.py runs
# onnxruntime inside Triton's Python) + the project's TensorRT plan builder
# (triton_models/build_trt_plan.sh, run by the tensorrt-plans init container with this image's trtexec,
# /usr/src/tensorrt/bin/trtexec). The onnxruntime and TensorRT backends come with the base image.
# Build from the repository root:
#
#   docker build -f deploy/docker/triton.Dockerfile -t REGISTRY/imgstream-triton:0.1.0 .
#
# The base digest is a placeholder that no registry serves, so a build fails until it is filled in:
#   docker buildx imagetools inspect nvcr.io/nvidia/tritonserver:24.10-py3 --format '{{json .Manifest.Digest}}'
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
ARG TRITON_IMAGE_DIGEST=sha256:0000000000000000000000000000000000000000000000000000000000000000
FROM ${TRITON_IMAGE}@${TRITON_IMAGE_DIGEST}
# the newest onnxruntime with wheels for the image's Python (3.10 on Ubuntu 22.04)
ARG ONNXRUNTIME_VERSION=1.23.2
USER root
RUN python3 -m pip install --no-cache-dir "onnxruntime==${ONNXRUNTIME_VERSION}" \
 && python3 -c "import onnxruntime, numpy"
COPY triton_models/build_trt_plan.sh /opt/imgstream/build_trt_plan.sh
# `triton-server` (uid 1000) of the NGC image; the pods also set runAsUser/runAsNonRoot
USER 1000:1000
