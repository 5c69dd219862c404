#!/usr/bin/env bash
# Run every test suite: ruff, the Python tests, and the editor clients' tests.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
status=0

echo "== ruff"
"$VENV/bin/ruff" check . || status=1
"$VENV/bin/ruff" format --check . || status=1

echo "== pytest"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
rc=$?
# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
if [ $rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; status=1
elif [ $rc -ne 0 ]; then status=1; fi

for suite in clients/*/run-tests.sh; do
  [ -x "$suite" ] || continue
  echo "== $suite"
  "$suite" || status=1
done
exit $status
