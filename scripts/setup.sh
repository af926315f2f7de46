#!/usr/bin/env bash
# Set up everything napari-ssseg needs in ./.venv: PyTorch (CPU build unless a GPU is present),
# the package with its napari, ML and test extras pinned to verified versions, and (when run as
# root on Debian/Ubuntu) the system libraries for headless Qt (Xvfb). Idempotent: a second run
# that has nothing to do returns in about a second.
#
# Environment:
#   PYTHON            interpreter used to create the venv (default: python3; needs >= 3.10)
#   SSSEG_TORCH_SPEC  pip requirement for torch (default: torch==2.13.0). On a CPU-only machine
#                     without a local CPU wheel, pass the CPU build explicitly, see
#                     docs/installation.md.
#   SSSEG_SKIP_APT=1  never call apt-get
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.ssseg-setup-stamp
want=$(cat pyproject.toml requirements/constraints.txt scripts/setup.sh | sha1sum | cut -d' ' -f1)

need_apt=0
command -v Xvfb >/dev/null 2>&1 || need_apt=1
if [ "$need_apt" = 1 ] && [ "${SSSEG_SKIP_APT:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Xvfb and Qt's X11 libraries with apt-get (headless GUI tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 \
      libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 \
      libgl1 libegl1 libfontconfig1 libdbus-1-3 >/dev/null
  else
    echo "setup: Xvfb is not installed and this is not a root Debian shell; GUI tests will be" \
         "skipped. Install it with: sudo apt-get install xvfb" >&2
  fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import napari_ssseg" 2>/dev/null; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PY --version 2>&1)"
  $PY -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q -U pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  spec=${SSSEG_TORCH_SPEC:-torch==2.13.0}
  echo "setup: installing $spec (install torch before anything that depends on it, so pip does"
  echo "       not pick a multi-GB CUDA build on a machine without a GPU)"
  $PIP install -q "$spec"
fi
echo "setup: installing napari-ssseg with its napari, ml, test and clinical extras"
$PIP install -q -c requirements/constraints.txt -e ".[ml,napari,test,clinical]"
echo "$want" > "$STAMP"
echo "setup: done ($("$VENV/bin/python" -c 'import torch, napari, monai; print(f"torch {torch.__version__}, napari {napari.__version__}, monai {monai.__version__}")'))"
