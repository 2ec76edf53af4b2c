#!/bin/bash
# Triton's entry point: serve the repository that the init containers prepared, loading exactly the
# models named in TRITON_MODELS (ConfigMap triton-models). Explicit model control means a model that
# fails to load fails the pod (readiness never passes) instead of being silently skipped.
set -euo pipefail
: "${TRITON_MODELS:?TRITON_MODELS names the models to load (ConfigMap triton-models)}"
args=(
  --model-repository="${MODEL_REPOSITORY:-/models}"
  --model-control-mode=explicit
  --http-port=8000
  --grpc-port=8001
  --metrics-port=8002
  --allow-metrics=true
  --allow-cpu-metrics=true
  # the models enable Triton's response cache (identical images answered from memory)
  --cache-config="local,size=${TRITON_RESPONSE_CACHE_BYTES:-268435456}"
  --strict-readiness=true
  --exit-on-error=true
  --log-format=ISO8601
)
for model in $TRITON_MODELS; do
  args+=(--load-model="$model")
done
exec "${TRITONSERVER:-tritonserver}" "${args[@]}" "$@"
