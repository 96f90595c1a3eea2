#!/usr/bin/env bash
# Run here, before the GPU machine's call of benchmarks/gpu.sh: fills benchmarks/gpu_wheels (git
# ignores it; the device tool carries it) with what that machine's image lacks for
# `python -m dtrain`: hydra-core, omegaconf and antlr4-python3-runtime, for the image's Python
# (3.12; GPU_PYTHON_VERSION= for another), at the versions this checkout's venv runs. About
# 400 KB. The image's torch, lightning, torchvision and the rest are used as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
target_python=${GPU_PYTHON_VERSION:-3.12}
wheels=benchmarks/gpu_wheels
installed() { "$python" -c "from importlib.metadata import version; print(version('$1'))" 2>/dev/null || echo "$2"; }
hydra=$(installed hydra-core 1.3.8)
omegaconf=$(installed omegaconf 2.3.1)
antlr=$(installed antlr4-python3-runtime 4.9.3)
rm -rf "$wheels"
mkdir -p "$wheels"
# Both are pure-Python wheels on PyPI.
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$target_python" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d "$wheels" "hydra-core==$hydra" "omegaconf==$omegaconf"
# antlr4-python3-runtime 4.9.x, which omegaconf 2.3 requires exactly, is published as source
# only: built here into a pure-Python wheel (py3-none-any), the same on any Python 3.
"$python" -m pip wheel --quiet --no-deps --no-binary antlr4-python3-runtime -w "$wheels" "antlr4-python3-runtime==$antlr"
ls -l "$wheels"
echo "gpu_prepare.sh: done; now run benchmarks/gpu.sh --out \"\$OUT\" on the GPU machine with $wheels carried (README, Performance)"
