#!/usr/bin/env bash
# The VS Code extension's tests: type-check the glue, build the .vsix from a clean out/ (as
# `npm ci && npm run package` does on a fresh clone), and run the protocol modules under node
# against the real server (the repo's venv unless CORTEX_RPC names another).
set -euo pipefail
cd "$(dirname "$0")"
. ../../scripts/suite.sh
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  suite_cannot_run "node/npm not found; the VS Code extension's tests need Node 20+ (scripts/bootstrap.sh installs Debian's nodejs and npm)"
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  suite_cannot_run "node $(node --version) is too old; the VS Code extension's tests and vsce need Node 20+"
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
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cortex-vscode.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

t=$(suite_now)
if npm run --silent typecheck; then suite_record "typecheck (tsc --noEmit)" pass "$(suite_since "$t")"
else suite_record "typecheck (tsc --noEmit)" fail "$(suite_since "$t")" "tsc found type errors"; exit 1; fi

# The package from a clean state: vscode:prepublish must compile out/src/extension.js.
t=$(suite_now)
rm -rf out
if npm run --silent package -- --out "$tmp/cortex.vsix" > "$tmp/package.log" 2>&1 \
  && "$SUITE_PYTHON" -c 'import sys, zipfile; sys.exit("extension/out/src/extension.js" not in zipfile.ZipFile(sys.argv[1]).namelist())' "$tmp/cortex.vsix"; then
  echo "ok - npm run package built a .vsix with out/src/extension.js from a clean out/"
  suite_record "npm run package from a clean out/" pass "$(suite_since "$t")"
else
  echo "not ok - npm run package"; cat "$tmp/package.log"
  suite_record "npm run package from a clean out/" fail "$(suite_since "$t")" "$(tail -n 3 "$tmp/package.log")"
  exit 1
fi

reporters=(--test-reporter=spec --test-reporter-destination=stdout)
if [ -n "${CORTEX_TEST_RESULTS:-}" ]; then
  reporters+=(--test-reporter=junit "--test-reporter-destination=$CORTEX_TEST_RESULTS/${CORTEX_TEST_SUITE:-vscode}.node.xml")
fi
npx tsc -p .
node --test --test-concurrency=1 "${reporters[@]}" out/test/*.test.js
