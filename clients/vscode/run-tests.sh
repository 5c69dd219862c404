#!/usr/bin/env bash
# The VS Code extension's tests: type-check the glue, run the protocol modules under node
# against the real server (the repo's venv unless CORTEX_RPC names another).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "skip: node/npm not found; the VS Code extension's tests need Node 20+" >&2
  exit 0
fi
export CORTEX_RPC=${CORTEX_RPC:-$(cd ../.. && pwd)/.venv/bin/cortex-rpc}
if [ ! -x "$CORTEX_RPC" ]; then
  echo "error: $CORTEX_RPC not found; run scripts/bootstrap.sh first (or set CORTEX_RPC)" >&2
  exit 1
fi
# npm ci only when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent typecheck
npm test --silent
