#!/usr/bin/env bash
# Set up everything cortex-rpc needs on this machine: system packages where they belong
# (Debian/Ubuntu: OpenBLAS for fast MLX on CPU, Neovim and Emacs with eglot for the editor
# tests, node and npm for the VS Code and scripts suites, python3-venv where the venv needs
# it), a virtual environment in .venv, and the package with its dev extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ "$(uname -s)" = "Linux" ] && command -v apt-get >/dev/null 2>&1; then
  packages="libopenblas0-pthread neovim emacs-nox elpa-eglot tmux golang-go"
  missing=""
  for p in $packages; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
  done
  # By command, not package: node and npm may come from elsewhere (NodeSource, nvm). The VS
  # Code and scripts suites need both; Debian's own python3 needs python3-venv for .venv.
  command -v node >/dev/null 2>&1 || missing="$missing nodejs"
  command -v npm >/dev/null 2>&1 || missing="$missing npm"
  if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -m ensurepip --version >/dev/null 2>&1; then
    missing="$missing python3-venv"
  fi
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
    if [ "$SUDO" = "none" ]; then
      echo "warning: cannot install$missing (not root, no sudo); training on CPU will be slow" >&2
    else
      echo "Installing Debian packages:$missing"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
  fi
elif [ "$(uname -s)" = "Darwin" ] && ! command -v npm >/dev/null 2>&1; then
  echo "warning: node/npm not found; the VS Code and scripts suites need Node 20+ (brew install node)" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if [ "$(uname -s)" = "Linux" ]; then
  # The export extra needs torch for llama.cpp's converter: the CPU build (this machine kind
  # keeps torch 2.13.0's CPU wheel on disk); a bare "torch" would fetch a CUDA build.
  "$VENV/bin/python" -c "import torch" 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
"$VENV/bin/python" -m pip install -q -e ".[dev,export]" 2>&1 | grep -v "^WARNING: Location" || true
# llama.cpp's GGUF converter (a 75 MB download from PyPI, unpacked, not built).
PYTHON="$VENV/bin/python" scripts/fetch_llama_cpp.sh || echo "warning: no GGUF export (fetch_llama_cpp.sh failed)" >&2
# llama-cpp-python compiles llama.cpp (about 12 minutes on two cores): only when asked.
if [ "${CORTEX_BUILD_LLAMA_CPP:-0}" = "1" ]; then
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$VENV/bin/python" -m pip install -q -e ".[llama-cpp]"
fi
"$VENV/bin/python" -c "import cortex_rpc, mlx.core, mlx_lm, pygls, pytest_lsp" \
  || { echo "error: installation failed; see pip's output above" >&2; exit 1; }
