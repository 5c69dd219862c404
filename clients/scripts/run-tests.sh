#!/usr/bin/env bash
# Run both raw-protocol examples against the real server on a tiny generated model, in a
# temporary CORTEX_HOME, and check that each validates the data and completes a job.
set -euo pipefail
cd "$(dirname "$0")"
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

echo "== train.py (Python, standard library)"
if python3 train.py "$tmp/tiny" "$dataset" tiny-py --iterations 12 --server "$server" > "$tmp/py.log" 2>&1 && check tiny-py "$tmp/py.log"; then
  echo "ok - train.py validated the dataset and completed a job"
else
  echo "not ok - train.py"; cat "$tmp/py.log"; status=1
fi

echo "== train.mjs (node, no packages)"
if ! command -v node >/dev/null 2>&1; then
  echo "skip - node not found"
elif node train.mjs "$tmp/tiny" "$dataset" tiny-node --iterations 12 --server "$server" > "$tmp/node.log" 2>&1 && check tiny-node "$tmp/node.log"; then
  echo "ok - train.mjs validated the dataset and completed a job"
else
  echo "not ok - train.mjs"; cat "$tmp/node.log"; status=1
fi

# A broken dataset must stop both before training, with the problem's line.
printf '%s\n' '{"prompt": "a", "response": "b"}' 'not json' > "$tmp/broken.jsonl"
if python3 train.py "$tmp/tiny" "$tmp/broken.jsonl" nope --server "$server" > "$tmp/bad.log" 2>&1; then
  echo "not ok - train.py accepted a broken dataset"; status=1
elif grep -q "broken.jsonl:2: error \[json-syntax\]" "$tmp/bad.log" && [ ! -e "$CORTEX_HOME/mlx_models/nope" ]; then
  echo "ok - train.py refuses a broken dataset with its line"
else
  echo "not ok - train.py broken dataset"; cat "$tmp/bad.log"; status=1
fi
exit $status
