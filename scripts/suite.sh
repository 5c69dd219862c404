# Sourced by the clients' run-tests.sh: record test cases for the one summary that
# scripts/run-tests.sh prints (scripts/summarize_tests.py), and refuse to skip under CI.
# Outside scripts/run-tests.sh (no CORTEX_TEST_RESULTS) recording does nothing.
SUITE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE_PYTHON=${SUITE_PYTHON:-python3}

suite_now() { "$SUITE_PYTHON" -c 'import time; print(f"{time.time():.3f}")'; }

suite_since() {  # START: seconds since START (a suite_now value)
  "$SUITE_PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(suite_now)"
}

suite_record() {  # NAME pass|fail|skip SECONDS [MESSAGE]
  [ -n "${CORTEX_TEST_RESULTS:-}" ] || return 0
  "$SUITE_PYTHON" "$SUITE_REPO/scripts/summarize_tests.py" record \
    "$CORTEX_TEST_RESULTS/${CORTEX_TEST_SUITE:-$(basename "$(pwd)")}.xml" \
    "${CORTEX_TEST_SUITE:-$(basename "$(pwd)")}" "$@"
}

suite_cannot_run() {  # REASON: skip the whole suite; under CI (CI=true) fail it instead
  if [ "${CI:-}" = "true" ]; then
    echo "error: $1 (CI=true, where every suite must run)" >&2
    suite_record "prerequisites" fail 0 "$1"
    exit 1
  fi
  echo "skip: $1" >&2
  suite_record "whole suite" skip 0 "$1"
  exit 0
}
