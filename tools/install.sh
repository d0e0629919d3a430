#!/usr/bin/env bash
# Installs tst_mm and its whole stack into a virtual environment; safe to run again.
#
#   bash tools/install.sh [VENV]        (default: .venv; `make demo` / `make test` call it)
#
# 1. create VENV if it does not exist
# 2. build tools: setuptools < 81 (mmcv and mmengine import pkg_resources), wheel, ninja
# 3. torch: keep an installed one, else the pinned known-good CPU release (TORCH_SPEC)
# 4. mmcv 2.1.0 with its compiled ops, built from source once per torch build and cached
#    as a wheel (TST_MM_WHEEL_CACHE); FORCE_CUDA=1 when nvcc and a CUDA torch are present
# 5. tst_mm itself, editable, with its test extras
set -euo pipefail

VENV=${1:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
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
    $PIP install -q "$TORCH_SPEC"
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
    if command -v nvcc >/dev/null && [ "$CUDA_TORCH" = 1 ]; then
        export FORCE_CUDA=1
        TAG="$TAG-cuda"
        say "nvcc and a CUDA torch found: building mmcv with CUDA ops (FORCE_CUDA=1)"
    fi
    DEST="$WHEEL_CACHE/$TAG"
    WHEEL=$(ls "$DEST"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$WHEEL" ]; then
        say "building mmcv $MMCV_VERSION with ops from source (about 7 minutes on 2 cores)"
        mkdir -p "$DEST"
        # --no-build-isolation: the build must see torch, otherwise it silently skips ops.
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
            $PIP wheel --no-deps --no-build-isolation --no-cache-dir \
            -w "$DEST" "mmcv==$MMCV_VERSION"
        WHEEL=$(ls "$DEST"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)
    fi
    say "installing $WHEEL"
    $PIP install -q "$WHEEL"
fi

say "tst_mm (editable) and its dependencies"
$PIP install -q -e "$ROOT[tests]"
$PY -c 'import mmcv.ops, mmdet, mmseg, tst_mm; print("[install] ok: torch", \
__import__("torch").__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__, \
"mmseg", mmseg.__version__)'
