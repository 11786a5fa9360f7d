#!/usr/bin/env bash
# Type-checks the `cuda` feature (`cargo check --features cuda --all-targets`) on a machine with
# no GPU and no CUDA toolkit. candle-kernels' build script runs nvcc (to make PTX and a static
# MoE/GGUF kernel library) and cudarc's runs `nvcc --version` to pick its CUDA API version, so
# this installs NVIDIA's compiler and headers from PyPI into a venv and points the build at them.
# Nothing is linked or run: `cargo check` needs no libcuda, cuBLAS or cuRAND.
#
# The CUDA 12 wheels (nvidia-cuda-nvcc-cu12) ship ptxas but not nvcc; the CUDA 13 split wheels
# ship the whole driver (nvcc, cicc, cudafe++, ptxas) and install into one root, nvidia/cu13/.
# 13.0 is within cudarc 0.19's supported versions (11.4 to 13.4) and accepts Debian 12's gcc 12.
#
# Usage: scripts/cuda/check.sh [extra cargo check args]
# Env:   CUDA_VENV (default .venv-cuda in the repository, git-ignored),
#        CARGO_TARGET_DIR (default target/cuda: apart from the CPU build, whose candle it would
#        otherwise rebuild each time the feature flips),
#        CUDA_COMPUTE_CAP (default 80: there is no GPU to detect; 80 = Ampere, 90 = Hopper),
#        CARGO_NICE (default 19).
set -euo pipefail
cd "$(dirname "$0")/../.."

CUDA_VENV="${CUDA_VENV:-$PWD/.venv-cuda}"

# Exact versions this check was last run with. --no-deps: nvidia-cuda-nvcc requires the other
# three without pinning them, and cccl (cub/thrust/libcu++, used by reduce.cu) is separate.
wheels=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
)

if [ ! -x "$CUDA_VENV/bin/python" ]; then
    python3 -m venv "$CUDA_VENV"
fi
"$CUDA_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${wheels[@]}"

site="$("$CUDA_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cuda_root="$site/nvidia/cu13"
[ -x "$cuda_root/bin/nvcc" ] || { echo "no nvcc at $cuda_root/bin/nvcc" >&2; exit 1; }

# nvcc finds cicc, its headers (include/, include/cccl/) and libdevice relative to itself through
# bin/nvcc.profile, so only PATH and the toolkit root are needed. cudarc reads `nvcc --version`
# from PATH; candle-kernels (via cudaforge) takes NVCC, then PATH, then CUDA_HOME.
export PATH="$cuda_root/bin:$PATH"
export CUDA_HOME="$cuda_root" CUDA_PATH="$cuda_root" CUDA_ROOT="$cuda_root"
export NVCC="$cuda_root/bin/nvcc"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"

nvcc --version | tail -n 2
echo "CUDA_HOME=$CUDA_HOME CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
start=$SECONDS
nice -n "${CARGO_NICE:-19}" cargo check --features cuda --all-targets "$@"
echo "cargo check --features cuda --all-targets: ok in $((SECONDS - start)) s"
