"""Benchmark the data-quality report (``cortex/datasetReport``).

1. ``dataset_report`` on a generated 50,000-record JSONL file (2 % planted near-duplicates,
   0.5 % prompt/answer leaks) against ``analyze_dataset`` on the same file: what the report
   costs on top of the analysis it includes.
2. Its near-duplicate search (MinHash + LSH) against the exact baseline, Jaccard similarity of
   word shingles over every pair, on a 1,500-record subset (all pairs: 1.1 million), with the
   exact baseline's time extrapolated to 50,000 records (it grows with n²). Also the recall
   of the planted near-duplicate pairs.

Run from the repository root::

    .venv/bin/python benchmarks/report.py
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from itertools import combinations  # noqa: E402
from pathlib import Path  # noqa: E402

from cortex_rpc.datasets.analyze import analyze_dataset  # noqa: E402
from cortex_rpc.datasets.report import dataset_report  # noqa: E402
from cortex_rpc.datasets.similarity import SHINGLE, near_duplicate_groups, normalize  # noqa: E402

VOCABULARY = [f"w{i}" for i in range(8000)]


def generate(count: int, seed: int) -> tuple[list[dict[str, str]], set[tuple[int, int]]]:
    """Records with planted near-duplicates (one word changed) and leaks; the planted pairs."""
    rng = random.Random(seed)
    records: list[dict[str, str]] = []
    planted: set[tuple[int, int]] = set()
    for index in range(count):
        if index > 10 and rng.random() < 0.02:
            source = rng.randrange(index)
            words = records[source]["response"].split()
            words[rng.randrange(len(words))] = rng.choice(VOCABULARY)
            records.append({"prompt": records[source]["prompt"], "response": " ".join(words)})
            planted.add((source, index))
            continue
        prompt = " ".join(rng.choices(VOCABULARY, k=rng.randint(6, 20)))
        response = " ".join(rng.choices(VOCABULARY, k=rng.randint(20, 60)))
        if rng.random() < 0.005:
            response = f"{prompt} {response}"
        records.append({"prompt": prompt, "response": response})
    return records, planted


def shingles(text: str) -> set[str]:
    return {text[i : i + SHINGLE] for i in range(max(1, len(text) - SHINGLE + 1))}


def exact_pairs(texts: list[str], threshold: float) -> set[tuple[int, int]]:
    sets = [shingles(t) for t in texts]
    return {
        (a, b)
        for a, b in combinations(range(len(sets)), 2)
        if len(sets[a] & sets[b]) >= threshold * len(sets[a] | sets[b])
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--subset", type=int, default=1_500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    records, planted = generate(args.records, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        size_mb = path.stat().st_size / 1e6
        tic = time.perf_counter()
        analyze_dataset(path)
        analyze_s = time.perf_counter() - tic
        tic = time.perf_counter()
        report = dataset_report(path)
        report_s = time.perf_counter() - tic
    print(f"{args.records:,} records, {size_mb:.1f} MB")
    print(f"  analyze_dataset  {analyze_s:6.2f} s")
    print(
        f"  dataset_report   {report_s:6.2f} s   report / analysis = {report_s / analyze_s:.2f}x  "
        f"(score {report.score}, {len(report.clusters)} near-duplicate clusters)"
    )

    subset = [
        f"{normalize(r['prompt'])} {normalize(r['response'])}" for r in records[: args.subset]
    ]
    tic = time.perf_counter()
    groups = near_duplicate_groups(subset)
    minhash_s = time.perf_counter() - tic
    tic = time.perf_counter()
    exact = exact_pairs(subset, 0.8)
    exact_s = time.perf_counter() - tic
    found = {(a, b) for g in groups for a, b in combinations(g, 2)}
    planted_here = {p for p in planted if p[1] < args.subset}
    scale = (args.records / args.subset) ** 2
    print(
        f"near-duplicate search on {args.subset:,} records ({len(subset) * (len(subset) - 1) // 2:,} pairs):"
    )
    print(
        f"  MinHash + LSH    {minhash_s:6.3f} s   pairs {len(found)}, planted found "
        f"{len(planted_here & found)}/{len(planted_here)}, exact pairs found "
        f"{len(exact & found)}/{len(exact)}"
    )
    print(
        f"  exact Jaccard    {exact_s:6.2f} s   -> {exact_s * scale:,.0f} s extrapolated to "
        f"{args.records:,} records"
    )
    print(f"  ratio (exact / MinHash, same subset): {exact_s / minhash_s:,.0f}x")
    print(
        json.dumps(
            {
                "records": args.records,
                "analyzeSeconds": round(analyze_s, 2),
                "reportSeconds": round(report_s, 2),
                "reportOverAnalysis": round(report_s / analyze_s, 2),
                "subset": args.subset,
                "minhashSeconds": round(minhash_s, 3),
                "exactSeconds": round(exact_s, 2),
                "exactOverMinhash": round(exact_s / minhash_s),
                "recallPlanted": len(planted_here & found) / max(1, len(planted_here)),
                "recallExact": len(exact & found) / max(1, len(exact)),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
