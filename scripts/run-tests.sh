#!/usr/bin/env bash
# Run every test suite: ruff, the Python tests, and the editor clients' tests; then print one
# summary of them all (scripts/summarize_tests.py: counts, skips with reasons, the slowest
# tests, the total wall time). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
now() { "$PY" -c 'import time; print(f"{time.time():.3f}")'; }
elapsed() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }

started=$(now)
CORTEX_TEST_RESULTS=$(mktemp -d "${TMPDIR:-/tmp}/cortex-tests.XXXXXX")
export CORTEX_TEST_RESULTS
trap 'rm -rf "$CORTEX_TEST_RESULTS"' EXIT
record() { "$PY" scripts/summarize_tests.py record "$CORTEX_TEST_RESULTS/$1.xml" "$@"; }
suites=()
status=0

echo "== ruff"
ruff_rc=0
for check in "check ." "format --check ."; do
  t=$(now)
  # shellcheck disable=SC2086 # the two words of each check are its arguments
  if out=$("$VENV/bin/ruff" $check 2>&1); then
    record ruff "ruff $check" pass "$(elapsed "$t")"
  else
    ruff_rc=1
    record ruff "ruff $check" fail "$(elapsed "$t")" "$(printf '%s\n' "$out" | head -n 2)"
  fi
  printf '%s\n' "$out"
done
suites+=("ruff=$ruff_rc")
[ $ruff_rc -eq 0 ] || status=1

echo "== pytest"
# In parallel (pytest-xdist): most tests wait on a server or a worker process, so two
# processes per core pair halve the wall time. CORTEX_TEST_WORKERS=1 runs them in one.
workers=${CORTEX_TEST_WORKERS:-$("$PY" -c 'import os; print(min(4, os.cpu_count() or 1))')}
parallel=()
[ "$workers" -gt 1 ] && parallel=(-n "$workers")
"$PY" -m pytest -q -p no:cacheprovider ${parallel[@]+"${parallel[@]}"} --junitxml="$CORTEX_TEST_RESULTS/pytest.xml" "$@"
rc=$?
suites+=("pytest=$rc")
# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
if [ $rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; status=1
elif [ $rc -ne 0 ]; then status=1; fi

for suite in clients/*/run-tests.sh; do
  [ -x "$suite" ] || continue
  name=$(basename "$(dirname "$suite")")
  echo "== $suite"
  t=$(now)
  CORTEX_TEST_SUITE=$name "$suite"
  rc=$?
  suites+=("$name=$rc")
  # A suite that records no cases of its own counts as one case: the script's exit status.
  if ! compgen -G "$CORTEX_TEST_RESULTS/$name*.xml" >/dev/null; then
    if [ $rc -eq 0 ]; then record "$name" "$suite" pass "$(elapsed "$t")"
    else record "$name" "$suite" fail "$(elapsed "$t")" "exit $rc"; fi
  fi
  [ $rc -eq 0 ] || status=1
done

echo
args=()
for s in "${suites[@]}"; do args+=(--suite "$s"); done
"$PY" scripts/summarize_tests.py summarize "$CORTEX_TEST_RESULTS" "${args[@]}" --wall "$(elapsed "$started")" \
  || status=1
exit $status
