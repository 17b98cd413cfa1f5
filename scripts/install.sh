#!/usr/bin/env bash
# Install dianjing and the default model into the current Python environment.
#
# torch on PyPI for x86_64 Linux is a CUDA build of several GB. This script takes a CPU
# build instead: from a local wheel folder when pip's find-links has one (as on the
# project's machines), else from the PyTorch CPU index on Linux machines without a GPU.
# Elsewhere (macOS, machines with CUDA) it leaves the choice to pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${DIANJING_EXTRAS:-default-model,dev}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if "$PY" -c "import torch" 2>/dev/null; then
    echo "torch $("$PY" -c 'import torch; print(torch.__version__)') is already installed"
elif "$PY" -m pip install --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
    # the wheel comes from the local folder; its own dependencies (sympy, networkx, …) are not
    # there, so they come from the package index (asking for all of it with --no-index failed
    # in a fresh venv and fell through to the PyTorch index, retried for minutes where it is
    # unreachable)
    "$PY" -m pip install "torch==$TORCH_VERSION"
    echo "installed torch $TORCH_VERSION from the local wheel folder"
elif [ "$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    # a CPU build from PyTorch's own index; no retry storm where that host cannot be reached
    "$PY" -m pip install --retries 1 --timeout 30 torch --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple
else
    "$PY" -m pip install torch
fi
"$PY" -m pip install -e ".[$EXTRAS]"
echo "dianjing installed: try 'dianjing train' then the 'dianjing chat' command it prints"
