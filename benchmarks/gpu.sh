#!/usr/bin/env bash
# The GPU benchmark (README, Performance, "GPU benchmark"), one JSON object on stdout.
#
# On the GPU machine (its image has torch, lightning and torchvision but not Hydra), after
# benchmarks/gpu_prepare.sh has filled benchmarks/gpu_wheels here and with that folder carried:
#   benchmarks/gpu.sh --out "$OUT"
# Anywhere, the dry run the tests use (tiny sizes, seconds):
#   benchmarks/gpu.sh --device cpu --tiny
# Every argument goes to `python -m benchmarks.gpu` (--help lists them). PYTHON picks the
# interpreter (default python3, on the GPU machine the one that holds PyTorch), GPU_WHEELS the
# folder of wheels (default benchmarks/gpu_wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=${GPU_WHEELS:-benchmarks/gpu_wheels}
site=
cleanup() { if [ -n "$site" ]; then rm -rf "$site"; fi; }
trap cleanup EXIT
if ! "$python" -c "import hydra, omegaconf" 2>/dev/null; then
    if ! compgen -G "$wheels/*.whl" >/dev/null; then
        echo "gpu.sh: $python has no Hydra and $wheels holds no wheels: run benchmarks/gpu_prepare.sh here first, then carry $wheels" >&2
        exit 2
    fi
    # Only the carried wheels, none of their dependencies: pip must never replace the image's torch.
    site=$(mktemp -d /tmp/dtrain-gpu-site.XXXXXX)
    "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# dtrain runs from this checkout, installed or not.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$python" -m benchmarks.gpu "$@"
