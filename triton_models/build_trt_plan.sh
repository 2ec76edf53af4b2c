#!/usr/bin/env bash
# Build the TensorRT plans of a GPU model repository, on the GPU that will serve them.
#
#   triton_models/build_trt_plan.sh REPOSITORY
#
# A plan is tied to the GPU model and the TensorRT version, so it is built at deploy time
# (a Kubernetes init container or Job on the target node, e.g. in the Triton NGC image, which
# has trtexec at /usr/src/tensorrt/bin/trtexec), not shipped. For every model folder that
# holds a `trtexec.args` file (written by `python -m triton_models.build --target gpu`, one
# flag per line, paths relative to the model folder) it runs
#
#   cd REPOSITORY/MODEL && trtexec --onnx=1/model.onnx --saveEngine=1/model.plan [--fp16 | --int8 --fp16] \
#       --minShapes=IMAGE:1xSxSx3 --optShapes=IMAGE:16xSxSx3 --maxShapes=IMAGE:32xSxSx3 \
#       --memPoolSize=workspace:1024M --skipInference
#
# (in the version folder the --onnx path names: 1/ for the built-in models, N/ for version N
# of an imported model) and records the GPU name + TensorRT version + sha256 of the inputs
# next to the plan (1/model.plan.stamp); a plan whose stamp still matches is kept, so the
# script can run on every pod start (put the repository on a per-node volume). Exits non-zero when any build fails.
#
# Environment: TRTEXEC (default: trtexec on PATH, else /usr/src/tensorrt/bin/trtexec),
#              CUDA_VISIBLE_DEVICES (the GPU to build on; plans are valid on every GPU of that model).
set -euo pipefail

repo=${1:?usage: build_trt_plan.sh REPOSITORY}
trtexec=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}
[[ -x $trtexec ]] || { echo "build_trt_plan: trtexec not found (set TRTEXEC)" >&2; exit 2; }

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 2>/dev/null || echo unknown-gpu)
trt_version=$("$trtexec" --help 2>&1 | grep -o -m1 'TensorRT version: [^ ]*\|\[TensorRT v[0-9]*\]' || echo unknown-trt)

status=0
shopt -s nullglob
for args_file in "$repo"/*/trtexec.args; do
  model_dir=$(dirname "$args_file")
  model=$(basename "$model_dir")
  mapfile -t args < "$args_file"
  v=1
  for a in "${args[@]}"; do
    if [[ $a == --onnx=*/* ]]; then v=${a#--onnx=}; v=${v%%/*}; fi
  done
  stamp="$gpu | $trt_version | $(cd "$model_dir" && sha256sum trtexec.args "$v/model.onnx" | sha256sum | cut -d' ' -f1)"
  if [[ -f $model_dir/$v/model.plan && -f $model_dir/$v/model.plan.stamp \
        && $(cat "$model_dir/$v/model.plan.stamp") == "$stamp" ]]; then
    echo "build_trt_plan: $model up to date ($gpu)"
    continue
  fi
  echo "build_trt_plan: building $model on $gpu: trtexec ${args[*]}"
  tmp_args=()
  for a in "${args[@]}"; do
    [[ $a == --saveEngine=* ]] && a="${a}.tmp"
    tmp_args+=("$a")
  done
  if (cd "$model_dir" && "$trtexec" "${tmp_args[@]}" > "$v/trtexec.log" 2>&1); then
    mv "$model_dir/$v/model.plan.tmp" "$model_dir/$v/model.plan"
    echo "$stamp" > "$model_dir/$v/model.plan.stamp"
    echo "build_trt_plan: $model done"
  else
    echo "build_trt_plan: $model FAILED, see $model_dir/$v/trtexec.log" >&2
    rm -f "$model_dir/$v/model.plan.tmp"
    status=1
  fi
done
exit $status
