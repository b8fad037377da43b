#!/usr/bin/env bash
# One-command setup on a fresh Debian machine: system packages, a virtual environment in .venv with
# the pinned versions of requirements.txt, and parrotscope itself (editable).
set -euo pipefail
cd "$(dirname "$0")"

DEB_PACKAGES=(fonts-liberation fonts-dejavu-core graphviz)
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${DEB_PACKAGES[@]}" >/dev/null
elif ! fc-list | grep -qi liberation; then
  echo "setup: please install these Debian packages (as root): ${DEB_PACKAGES[*]}" >&2
  exit 1
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# The Slurm executor plugin (for `--profile slurm`). 2.8.0 declares numpy>=2.4.5 but uses numpy only
# in an optional report; OpenCLIP and clip-benchmark need numpy<2.4, so it goes in without deps
# (all of which requirements.txt already pins).
.venv/bin/python -m pip install -q --no-deps snakemake-executor-plugin-slurm==2.8.0 \
  snakemake-executor-plugin-slurm-jobstep==0.6.1
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/python -c "import parrotscope, torch, open_clip, rapidocr; print('parrotscope setup ok: torch', torch.__version__)"
