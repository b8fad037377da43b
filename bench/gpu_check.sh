#!/usr/bin/env bash
# The prepared device check (issue 19; bench/gpu_check.py says what it runs and measures): on a GPU
# machine with no network, in five minutes or less on one H100. Its image has PyTorch but not this
# project's other packages: run bench/gpu_wheels.sh here first and carry .whl/ (the device tool's
# `carry: [".whl"]`). Writes the `## GPU check` section of docs/BENCHMARKS.md and, when $OUT is
# set (the device tool), copies that file and the JSON report there.
#   bash bench/gpu_check.sh                 # on the GPU machine
#   bash bench/gpu_check.sh --workers 0 4 8 12 --images 8192   # more
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import open_clip, rapidocr, webdataset, diffusers, lmdb, transformers" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "missing packages and no .whl/: run bench/gpu_wheels.sh here first" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
timeout 330 "$PY" bench/gpu_check.py --json "$out/gpu_check.json" "$@" || status=$?
if [ -n "${OUT:-}" ]; then cp docs/BENCHMARKS.md "$OUT/BENCHMARKS.md"; fi
exit $status
