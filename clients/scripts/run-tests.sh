#!/usr/bin/env bash
# Run both raw-protocol examples against the real server on a tiny generated model, in a
# temporary CORTEX_HOME, and check that each validates the data and completes a job.
set -euo pipefail
cd "$(dirname "$0")"
. ../../scripts/suite.sh
repo=$(cd ../.. && pwd)
server=${CORTEX_RPC:-$repo/.venv/bin/cortex-rpc}
python=${CORTEX_PYTHON:-$(dirname "$server")/python}
if [ ! -x "$server" ]; then
  echo "error: $server not found; run scripts/bootstrap.sh first (or set CORTEX_RPC)" >&2
  exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cortex-scripts.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export CORTEX_HOME=$tmp/home HF_HUB_CACHE=$tmp/hf
"$python" -m cortex_rpc.models.tiny "$tmp/tiny"
dataset=$repo/cortex_rpc/data/sample_dataset.jsonl
status=0

check() {  # check NAME LOG: the run validated the data, printed progress and saved the model
  grep -q "^Dataset validated: [0-9]* examples" "$2" && grep -q "^  step [0-9]*/12  loss" "$2" \
    && grep -q "^Completed: $CORTEX_HOME/mlx_models/$1 " "$2" && [ -f "$CORTEX_HOME/mlx_models/$1/fine-tuned.marker" ]
}

outcome() {  # outcome NAME START ok|fail [LOG]: print TAP-style and record the case
  if [ "$3" = ok ]; then
    echo "ok - $1"; suite_record "$1" pass "$(suite_since "$2")"
  else
    echo "not ok - $1"; cat "$4"; status=1
    suite_record "$1" fail "$(suite_since "$2")" "$(tail -n 3 "$4")"
  fi
}

echo "== train.py (Python, standard library)"
t=$(suite_now)
if python3 train.py "$tmp/tiny" "$dataset" tiny-py --iterations 12 --server "$server" > "$tmp/py.log" 2>&1 && check tiny-py "$tmp/py.log"; then
  outcome "train.py validated the dataset and completed a job" "$t" ok
else
  outcome "train.py validated the dataset and completed a job" "$t" fail "$tmp/py.log"
fi

echo "== train.mjs (node, no packages)"
t=$(suite_now)
if ! command -v node >/dev/null 2>&1; then
  reason="node not found (scripts/bootstrap.sh installs Debian's nodejs)"
  if [ "${CI:-}" = "true" ]; then
    echo "not ok - train.mjs: $reason (CI=true, where every test must run)"; status=1
    suite_record "train.mjs completed a job" fail 0 "$reason"
  else
    echo "skip - train.mjs: $reason"; suite_record "train.mjs completed a job" skip 0 "$reason"
  fi
elif node train.mjs "$tmp/tiny" "$dataset" tiny-node --iterations 12 --server "$server" > "$tmp/node.log" 2>&1 && check tiny-node "$tmp/node.log"; then
  outcome "train.mjs completed a job" "$t" ok
else
  outcome "train.mjs completed a job" "$t" fail "$tmp/node.log"
fi

# A broken dataset must stop both before training, with the problem's line.
printf '%s\n' '{"prompt": "a", "response": "b"}' 'not json' > "$tmp/broken.jsonl"
t=$(suite_now)
if python3 train.py "$tmp/tiny" "$tmp/broken.jsonl" nope --server "$server" > "$tmp/bad.log" 2>&1; then
  echo "train.py accepted a broken dataset" >> "$tmp/bad.log"
  outcome "train.py refuses a broken dataset with its line" "$t" fail "$tmp/bad.log"
elif grep -q "broken.jsonl:2: error \[json-syntax\]" "$tmp/bad.log" && [ ! -e "$CORTEX_HOME/mlx_models/nope" ]; then
  outcome "train.py refuses a broken dataset with its line" "$t" ok
else
  outcome "train.py refuses a broken dataset with its line" "$t" fail "$tmp/bad.log"
fi
exit $status
