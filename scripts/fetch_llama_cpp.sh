#!/usr/bin/env bash
# Unpack llama.cpp's sources (its convert_hf_to_gguf.py, conversion/ and gguf-py/) from the
# llama-cpp-python source distribution on PyPI into $CORTEX_HOME/tools/llama.cpp, where
# cortex/exportModel finds its GGUF converter. Safe to run again.
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
PYTHON=${PYTHON:-python3}
DEST=${CORTEX_LLAMA_CPP:-${CORTEX_HOME:-$HOME/.cortex}/tools/llama.cpp}
if [ -f "$DEST/convert_hf_to_gguf.py" ]; then
  echo "llama.cpp's converter is already in $DEST"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download -q "llama-cpp-python==$VERSION" --no-binary :all: --no-deps -d "$work"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST.tmp"
mv "$work"/llama_cpp_python-*/vendor/llama.cpp "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
echo "llama.cpp $VERSION's converter unpacked into $DEST"
