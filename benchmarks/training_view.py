"""Benchmark the training view against mlx_lm's own chat dataset processing.

A 32,000-token byte-level BPE tokenizer is trained locally on generated text and given a
ChatML-like chat template (tools included). 100,000 generated chat records (single-turn,
multi-turn, system prompts, 20 % tool calls) are then processed two ways, in the same run:

(a) ``TemplateRenderer.view`` for every record: rendered text, ids, offsets and the per-turn
    loss mask (every assistant turn located and verified);
(b) mlx_lm's ``ChatDataset(data, tokenizer, mask_prompt=True).process`` for every record
    (``mlx_lm.tuner.datasets``): ids and one prompt offset (the last turn only).

It prints records/s of each and the ratio (a)/(b). Target: >= 1x. With ``--edits N`` it also
opens the records as a JSONL document in a real server (over stdio) with the tokenizer as the
editor's model, waits until every record's model checks are in, and times N one-line edits
until their publishDiagnostics (target: p95 < 50 ms; only the edited record is re-rendered). When the full run would
take more than about four minutes, both are measured on the same first ``--subset`` records
and the output says so. The two are timed on alternating chunks of 1,000 records, so a change in
the machine's load falls on both. Run: ``python benchmarks/training_view.py [--records N]``.
"""

from __future__ import annotations

import os
import sys

# Keep this folder off sys.path (its scripts share names with stdlib modules).
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

VOCAB_SIZE = 32_000
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
CHAT_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n{% for tool in tools %}"
    "{{ tool | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{%- for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] or '' }}"
    "{%- if message.get('tool_calls') %}{% for call in message['tool_calls'] %}"
    "<tool_call>{{ call['function'] | tojson }}</tool_call>{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYLLABLES = [a + b for a in "bcdfghklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]
# Budget for measuring both sides on every record; past it, a subset is measured.
FULL_RUN_SECONDS = 240


def lexicon(rng: random.Random, size: int = 60_000) -> list[str]:
    """Pseudo-words with a Zipf-like reuse, so BPE finds 32k merges worth learning."""
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(size)]


def sentence(rng: random.Random, words: list[str], n: int) -> str:
    picks = [words[min(int(rng.paretovariate(1.1)) - 1, len(words) - 1)] for _ in range(n)]
    return " ".join(picks).capitalize() + rng.choice([".", "?", "!", ", 42.", "."])


def build_tokenizer(directory: Path, words: list[str], rng: random.Random) -> None:
    """Train the byte-level BPE and save it as mlx_lm loads a model's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(words[i : i + 50]) for i in range(0, len(words), 20)]
    corpus += [sentence(rng, words, 30) for _ in range(40_000)]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "unk_token": None,
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the documentation",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


def record(rng: random.Random, words: list[str], i: int) -> dict:
    """One chat: 20 % tool loops; else single- or multi-turn, a third with a system prompt."""
    messages: list[dict] = []
    if i % 3 == 0:
        messages.append({"role": "system", "content": sentence(rng, words, 12)})
    if i % 5 == 0:
        call = {"name": "search_docs", "arguments": json.dumps({"query": sentence(rng, words, 3)})}
        messages += [
            {"role": "user", "content": sentence(rng, words, rng.randint(5, 40))},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": f"call_{i}", "type": "function", "function": call}],
            },
            {"role": "tool", "tool_call_id": f"call_{i}", "content": sentence(rng, words, 30)},
            {"role": "assistant", "content": sentence(rng, words, rng.randint(10, 120))},
        ]
        return {"messages": messages, "tools": TOOLS}
    for _ in range(1 if i % 2 else rng.randint(2, 4)):
        messages += [
            {"role": "user", "content": sentence(rng, words, rng.randint(5, 40))},
            {"role": "assistant", "content": sentence(rng, words, rng.randint(10, 120))},
        ]
    return {"messages": messages}


def rate(process, records: list[dict]) -> float:
    start = time.perf_counter()
    for item in records:
        process(item)
    return len(records) / (time.perf_counter() - start)


def interleaved(first, second, records: list[dict], chunk: int = 1000) -> tuple[float, float]:
    """Records/s of both, timed on alternating chunks so a change in machine load hits both."""
    spent = [0.0, 0.0]
    for offset in range(0, len(records), chunk):
        part = records[offset : offset + chunk]
        for side, process in enumerate((first, second)):
            start = time.perf_counter()
            for item in part:
                process(item)
            spent[side] += time.perf_counter() - start
    return len(records) / spent[0], len(records) / spent[1]


def live_edits(model_dir: Path, records: list[dict], edits: int, words) -> dict:
    """Open ``records`` with ``model_dir`` as the editor's model; time one-line edits."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_datasets", Path(_here) / "datasets.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.write("\n".join(json.dumps(r) for r in records))
    try:
        figures = bench.editor_session(
            Path(handle.name).read_text(),
            Path(handle.name).as_uri(),
            edits,
            lambda rng, line, version: json.dumps(record(rng, words, line)),
            lambda m: m.get("method") == "cortex/datasetSummary" and "training" in m["params"],
            initialization_options={"model": str(model_dir)},
        )
    finally:
        os.unlink(handle.name)
    return {
        "firstPublishSeconds": figures["openSeconds"],
        "allCheckedSeconds": figures["readySeconds"],
        "p50Ms": figures["p50Ms"],
        "p95Ms": figures["p95Ms"],
        "maxMs": figures["maxMs"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--subset", type=int, default=20_000)
    parser.add_argument("--edits", type=int, default=0, help="also time N editor edits")
    args = parser.parse_args()

    from mlx_lm.tuner.datasets import ChatDataset

    from cortex_rpc.datasets.training_view import load_renderer

    rng = random.Random(0)
    words = lexicon(rng)
    tmp = tempfile.TemporaryDirectory()
    model_dir = Path(tmp.name) / "tok"
    start = time.perf_counter()
    build_tokenizer(model_dir, words, rng)
    renderer = load_renderer(str(model_dir))
    vocab = renderer._encoder.vocab_size
    print(f"tokenizer: byte-level BPE, {vocab:,} tokens ({time.perf_counter() - start:.1f} s)")
    records = [record(rng, words, i) for i in range(args.records)]
    baseline = ChatDataset(records, renderer.tokenizer, mask_prompt=True)

    # Warm up both (template compile, caches) and check they agree on the ids.
    for item in records[:200]:
        view = renderer.view(item)
        ids, _ = baseline.process(item)
        assert view.ok and view.ids == list(ids), "the engine's ids differ from mlx_lm's"
    sample = records[:1000]
    estimate = len(records) / rate(renderer.view, sample) + len(records) / rate(
        baseline.process, sample
    )
    measured = records
    if estimate > FULL_RUN_SECONDS:
        measured = records[: min(args.subset, len(records))]
        print(
            f"full run estimated at {estimate:.0f} s: measuring the first {len(measured):,} "
            f"of {len(records):,} records"
        )
    tokens = sum(renderer.view(r).token_count for r in measured[:2000]) / min(2000, len(measured))
    print(f"records: {len(measured):,} (mean {tokens:.0f} tokens, 20 % tool calls)")
    engine, mlx = interleaved(renderer.view, baseline.process, measured)
    print(f"(a) training view, every turn located: {engine:,.0f} records/s")
    print(f"(b) mlx_lm ChatDataset.process:        {mlx:,.0f} records/s")
    print(f"ratio (a)/(b): {engine / mlx:.2f}x (target >= 1x)")
    if args.edits:
        edits = live_edits(model_dir, records, args.edits, words)
        print(
            f"editor with this model, {len(records):,} records: first publishDiagnostics "
            f"{edits['firstPublishSeconds']:.2f} s, every record checked "
            f"{edits['allCheckedSeconds']:.1f} s"
        )
        print(
            f"one-line edit -> publishDiagnostics over {args.edits} edits: "
            f"p50 {edits['p50Ms']:.1f} ms, p95 {edits['p95Ms']:.1f} ms (target < 50), "
            f"max {edits['maxMs']:.1f} ms"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
