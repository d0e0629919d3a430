#!/usr/bin/env bash
# Installs tst_mm and its whole stack into a virtual environment; safe to run again.
#
#   bash tools/install.sh [VENV]        (default: .venv; `make demo` / `make test` call it)
#   bash tools/install.sh --jobs        (prints the compile jobs a build would use)
#
# 1. create VENV if it does not exist
# 2. build tools: setuptools < 81 (mmcv and mmengine import pkg_resources), wheel, ninja
# 3. torch and torchvision: keep an installed torch (and add the torchvision of its
#    release), else the pinned known-good pair (TORCH_SPEC). mmdet's ImageNet backbones
#    (`torchvision://resnet50`) need torchvision to resolve their URLs.
# 4. mmcv 2.1.0 with its compiled ops, built from its source release once per torch
#    build and cached as a wheel (TST_MM_WHEEL_CACHE), with every core (C++20 where
#    the torch needs it); CUDA ops when a GPU is visible (or FORCE_CUDA=1) and nvcc
#    and a CUDA torch are present
# 5. tst_mm itself, editable, with its test extras
set -euo pipefail

# Compile jobs for mmcv: every core. GNU nproc honours OMP_NUM_THREADS, which `make test`
# sets to 1 for pytest (and make passes to this prerequisite): ignore it here.
JOBS=${MAX_JOBS:-$(env -u OMP_NUM_THREADS nproc)}
if [ "${1:-}" = "--jobs" ]; then  # what a build would use, for a check
    echo "$JOBS"
    exit 0
fi

VENV=${1:-.venv}
# The newest pair this machine's registries serve with a torchvision that loads: PyPI's
# torchvision wheels are CUDA builds and do not import beside a CPU-only torch.
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
MMCV_VERSION=2.1.0
WHEEL_CACHE=${TST_MM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tst_mm/wheels}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

say() { echo "[install] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check"

say "build tools"
$PIP install -q 'setuptools>=77,<81' wheel ninja 'numpy>=1.23,<2'

if $PY -c 'import torch' 2>/dev/null; then
    say "keeping installed torch $($PY -c 'import torch; print(torch.__version__)')"
else
    say "installing $TORCH_SPEC"
    # shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
    $PIP install -q $TORCH_SPEC
fi

if ! $PY -c 'import torchvision' 2>/dev/null; then
    # torchvision 0.(minor + 15) is the release built for torch 2.minor.
    TV_SPEC=$($PY -c 'import torch; minor = int(torch.__version__.split(".")[1]); \
print("torchvision==0.%d.*" % (minor + 15))')
    say "installing $TV_SPEC, the torchvision of torch $($PY -c 'import torch; print(torch.__version__)')"
    $PIP install -q --no-deps "$TV_SPEC"
    if ! ERR=$($PY -c 'import torchvision' 2>&1); then
        echo "[install] error: torchvision does not import beside this torch:" >&2
        echo "$ERR" | tail -n 1 >&2
        echo "[install] PyPI's torchvision is a CUDA build and fails beside a CPU-only torch." \
             "Install a matching pair yourself (the CPU pair from download.pytorch.org, or" \
             "remove the venv to get TORCH_SPEC='$TORCH_SPEC') and run this again." >&2
        exit 1
    fi
fi

if $PY - "$MMCV_VERSION" 2>/dev/null <<'PYEOF'
import sys
import mmcv
import mmcv.ops  # noqa: F401  (fails when mmcv was built without its ops)
sys.exit(mmcv.__version__ != sys.argv[1])
PYEOF
then
    say "mmcv $MMCV_VERSION with ops already installed"
else
    # One wheel per torch build: a wheel compiled against another torch will not load.
    TAG=$($PY -c 'import torch; print(torch.__version__.replace("+", "_"))')
    CUDA_TORCH=$($PY -c 'import torch; print(int(torch.version.cuda is not None))')
    GPU=$($PY -c 'import torch; print(int(torch.cuda.is_available()))')
    # A CUDA torch is also what pip installs on a machine without a GPU: build CPU ops
    # there unless asked (a GPU-less login node building for its cluster sets FORCE_CUDA=1).
    if command -v nvcc >/dev/null && [ "$CUDA_TORCH" = 1 ] \
            && { [ "$GPU" = 1 ] || [ "${FORCE_CUDA:-0}" = 1 ]; }; then
        export FORCE_CUDA=1
        TAG="$TAG-cuda"
        say "nvcc and a CUDA torch found: building mmcv with CUDA ops (FORCE_CUDA=1)"
    fi
    DEST="$WHEEL_CACHE/$TAG"
    WHEEL=$(ls "$DEST"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$WHEEL" ]; then
        say "building mmcv $MMCV_VERSION with ops from source with $JOBS jobs" \
            "(about 6 minutes on 2 cores)"
        mkdir -p "$DEST"
        SRC=$(mktemp -d)
        $PIP download -q --no-deps --no-binary :all: -d "$SRC" "mmcv==$MMCV_VERSION"
        tar -xzf "$SRC"/mmcv-"$MMCV_VERSION".tar.gz -C "$SRC"
        ATEN=$($PY -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include", "ATen", "ATen.h"))')
        if grep -q 'C++20 or later' "$ATEN"; then
            # torch >= 2.14's headers need C++20; mmcv 2.1.0's setup.py asks for C++17.
            say "this torch needs C++20: building mmcv with -std=c++20"
            sed -i 's/-std=c++17/-std=c++20/' "$SRC/mmcv-$MMCV_VERSION/setup.py"
        fi
        # --no-build-isolation: the build must see torch, otherwise it silently skips ops.
        # -g0: no debug symbols (a faster build and a smaller wheel).
        CFLAGS="${CFLAGS:--g0}" MMCV_WITH_OPS=1 MAX_JOBS=$JOBS \
            $PIP wheel --no-deps --no-build-isolation --no-cache-dir \
            -w "$DEST" "$SRC/mmcv-$MMCV_VERSION"
        rm -rf "$SRC"
        WHEEL=$(ls "$DEST"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)
    fi
    say "installing $WHEEL"
    $PIP install -q "$WHEEL"
fi

say "tst_mm (editable) and its dependencies"
$PIP install -q -e "$ROOT[tests]"
$PY -c 'import mmcv.ops, mmdet, mmseg, torchvision, tst_mm; print("[install] ok: torch", \
__import__("torch").__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__, \
"mmseg", mmseg.__version__)'
