#!/usr/bin/env bash
# Emacs + eglot as a client: a headless `emacs --batch` session against the real server on a
# JSONL file (Debian's emacs-nox 28 with elpa-eglot 1.9 work; scripts/bootstrap.sh installs
# them). Without Emacs it skips locally and fails on CI (CI=true).
set -euo pipefail
cd "$(dirname "$0")"
missing=""
if ! command -v emacs >/dev/null 2>&1; then
  missing="emacs not found"
elif ! emacs --batch -q --eval "(require 'eglot)" >/dev/null 2>&1; then
  missing="eglot not found (Debian: apt-get install elpa-eglot)"
fi
if [ -n "$missing" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "error: $missing; CI must run the Emacs client tests (scripts/bootstrap.sh installs emacs-nox and elpa-eglot)" >&2
    exit 1
  fi
  echo "skip: $missing; install emacs-nox and elpa-eglot (scripts/bootstrap.sh does on Debian) to test Emacs" >&2
  exit 0
fi
repo=$(cd ../.. && pwd)
export CORTEX_RPC=${CORTEX_RPC:-$repo/.venv/bin/cortex-rpc}
if [ ! -x "$CORTEX_RPC" ]; then
  echo "error: $CORTEX_RPC not found; run scripts/bootstrap.sh first (or set CORTEX_RPC)" >&2
  exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cortex-emacs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
{
  echo '{"prompt": "What is Python?", "response": "A programming language."}'
  echo '{"prompt": "Hi", "response": "Hello"},'
  echo '{"prompt": "What is a list?", "answer": "An ordered collection."}'
  for i in 1 2 3 4; do printf '{"prompt": "Question %s?", "response": "Answer %s."}\n' $i $i; done
} > "$tmp/data.jsonl"
mkdir -p "$tmp/home" "$tmp/emacs"
# -q: no init file, but the site files that put Debian's elpa packages on the load path.
CORTEX_EMACS_ROOT=$(pwd) CORTEX_TEST_DIR=$tmp CORTEX_HOME=$tmp/home HF_HUB_CACHE=$tmp/hf \
  HOME=$tmp/emacs timeout 300 emacs --batch -q -l tests/test-cortex.el
