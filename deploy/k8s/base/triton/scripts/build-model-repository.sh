#!/bin/bash
# The model-repository init container: write the Triton model repository with the project's own builder
# (`python -m triton_models.build`, from the job's image), as MODEL_BUILD_ARGS in ConfigMap triton-models
# says: target (cpu|gpu), the variants to build, instances per CPU/GPU. ONNX exports are cached under
# IMGSTREAM_STACK_DIR for the life of the pod only.
set -euo pipefail
: "${MODEL_BUILD_ARGS:?MODEL_BUILD_ARGS holds the triton_models.build arguments (ConfigMap triton-models)}"
export IMGSTREAM_STACK_DIR=${IMGSTREAM_STACK_DIR:-/tmp/imgstream}
read -r -a args <<< "$MODEL_BUILD_ARGS"
exec "${PYTHON:-/opt/imgstream/venv/bin/python}" -m triton_models.build --out "${MODEL_REPOSITORY:-/models}" "${args[@]}"
