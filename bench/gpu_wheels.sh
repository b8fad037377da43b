#!/usr/bin/env bash
# Fetch, on this machine (PyPI reachable), the wheels bench/gpu_check.sh needs on a GPU machine
# whose image has PyTorch, transformers, onnxruntime, OpenCV, pandas and pyarrow but none of the
# packages below, and no network. Versions are requirements.txt's pins; Python 3.12 (the device
# image's). They land in .whl/ (git-ignored), which the device call carries (64 MiB limit).
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="open_clip_torch ftfy wcwidth webdataset braceexpand rapidocr colorlog omegaconf
pyclipper shapely diffusers importlib_metadata lmdb rapidfuzz transformers tokenizers huggingface_hub safetensors"
rm -rf .whl && mkdir -p .whl
for name in $PACKAGES; do
  pin=$(grep -i -E "^${name//_/[-_]}==" requirements.txt || true)
  [ -n "$pin" ] || { echo "no pin for $name in requirements.txt" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin" 2>&1 | grep -v "is ignored" || true
  ls .whl | grep -i -q "^${name//-/_}-" || { echo "no wheel for $pin" >&2; exit 1; }
done
du -sh .whl
