#!/usr/bin/env bash
# cortex.nvim's tests: headless Neovim (0.7.2 from Debian works) against the real server, on a
# tiny generated model in a temporary CORTEX_HOME. CORTEX_CAPTURE=FILE saves the diagnostics.
# A Lua error outside a test case exits 2 instead of leaving Neovim waiting.
set -euo pipefail
cd "$(dirname "$0")"
. ../../scripts/suite.sh
if ! command -v nvim >/dev/null 2>&1; then
  suite_cannot_run "nvim not found; install Neovim (scripts/bootstrap.sh does on Debian) to test cortex.nvim"
fi
repo=$(cd ../.. && pwd)
export CORTEX_RPC=${CORTEX_RPC:-$repo/.venv/bin/cortex-rpc}
python=${CORTEX_PYTHON:-$(dirname "$CORTEX_RPC")/python}
if [ ! -x "$CORTEX_RPC" ]; then
  echo "error: $CORTEX_RPC not found; run scripts/bootstrap.sh first (or set CORTEX_RPC)" >&2
  exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cortex-nvim.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$python" -m cortex_rpc.models.tiny "$tmp/models/tiny-llama"
printf '%s\n' '{"prompt": "What is Python?", "response": "A programming language."}' \
  '{"prompt": "no response here"}' 'not json at all' '{"prompt": "Empty", "response": ""}' > "$tmp/broken.jsonl"
for i in 1 2 3 4 5 6; do printf '{"prompt": "Question %s?", "response": "Answer %s."}\n' $i $i; done > "$tmp/good.jsonl"
mkdir -p "$tmp/home" "$tmp/xdg"
CORTEX_NVIM_ROOT=$(pwd) CORTEX_TEST_DIR=$tmp CORTEX_HOME=$tmp/home HF_HUB_CACHE=$tmp/hf \
  XDG_CACHE_HOME=$tmp/xdg XDG_STATE_HOME=$tmp/xdg XDG_DATA_HOME=$tmp/xdg \
  timeout 600 nvim --headless -u NONE -i NONE -n \
  -c "lua local ok, err = pcall(dofile, 'tests/test_cortex.lua'); if not ok then io.stderr:write(tostring(err) .. '\\n'); vim.cmd('cquit 2') end"
