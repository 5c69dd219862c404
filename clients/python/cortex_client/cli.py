"""``cortex-finetune``: the terminal wizard and its scripted subcommands."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from cortex_rpc import __version__
from cortex_rpc.paths import cortex_home
from cortex_rpc.units import human_bytes, human_params

from .client import CortexClient, CortexRpcError
from .commands import cortex_finetune
from .terminal import Terminal, WizardAborted
from .wizard import Wizard, WizardAnswers, WizardResult, chat_loop, free_name, parse_value

DEMO_MODEL = "cortex-demo-tiny"
DEMO_NAME = "demo-custom"
# The demo model is small enough to train in seconds on two CPU cores and big enough
# (hidden 256) for LoRA to memorise the sample answers, so the result is visible.
DEMO_MODEL_SPEC = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2}
# The demo shows memorisation: its validation loss rises as the answers are learned, so the
# best-validation adapter would be an early, untaught one; keep the last (keepBest false).
DEMO_OVERRIDES = {
    "epochs": 70,
    "batchSize": 4,
    "learningRate": 1e-3,
    "loraRank": 16,
    "loraAlpha": 32,
    "keepBest": False,
}


WIZARD_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--model",), {"help": "base model: a directory or a name from 'models'"}),
    (("--data",), {"help": "dataset file (JSONL, JSON, CSV or TXT)"}),
    (("--sample",), {"action": "store_true", "help": "use the bundled sample dataset"}),
    (("--preset",), {"choices": ["quick", "balanced", "quality", "expert"]}),
    (
        ("--method",),
        {
            "choices": ["sft", "dpo", "orpo"],
            "help": "training method; dpo/orpo need preference pairs (prompt/chosen/rejected)"
            " (default: asked for preference data, dpo with --yes; sft otherwise)",
        },
    ),
    (("--name",), {"help": "name of the fine-tuned model"}),
    (
        ("--set",),
        {
            "dest": "overrides",
            "action": "append",
            "default": [],
            "metavar": "FIELD=VALUE",
            "help": "override a config field, e.g. --set learningRate=5e-5",
        },
    ),
    (
        ("--yes", "-y"),
        {"action": "store_true", "help": "accept defaults and confirmations (no questions)"},
    ),
    (
        ("--json",),
        {
            "action": "store_true",
            "help": "print machine-readable events on stdout, one JSON per line",
        },
    ),
    (
        ("--chat",),
        {
            "action": "append",
            "default": [],
            "metavar": "PROMPT",
            "help": "after training, ask the new model PROMPT (repeatable)",
        },
    ),
    (
        ("--model-dir",),
        {
            "action": "append",
            "default": [],
            "dest": "model_dirs",
            "help": "extra folder to look for models in (repeatable)",
        },
    ),
]


def add_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """The wizard's flags, accepted before or after a subcommand.

    On subcommands the defaults are suppressed so they do not undo the main parser's values.
    """
    for names, kwargs in WIZARD_OPTIONS:
        if suppress:
            kwargs = {**kwargs, "default": argparse.SUPPRESS}
        parser.add_argument(*names, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cortex-finetune",
        description="Fine-tune a local model with LoRA, step by step (or scripted with flags).",
    )
    parser.add_argument("--version", action="version", version=f"cortex-finetune {__version__}")
    add_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = _sub(commands, "demo", help="generate a tiny model and fine-tune it on the sample")
    demo.add_argument(
        "--replace",
        action="store_true",
        help=f"replace the fine-tuned model --name (default {DEMO_NAME}) if it exists",
    )
    _sub(commands, "models", help="list the models cortex-rpc can see")
    _sub(commands, "gpu", help="show the backend, memory and BLAS (systemInfo)")
    jobs = _sub(commands, "jobs", help="list training jobs")
    jobs.add_argument(
        "--logdir",
        action="store_true",
        help="print the tensorboard command that shows every job's training curves",
    )
    batch = _sub(commands, "batch", help="fine-tune one model per dataset in DIR")
    batch.add_argument("directory", type=Path)
    chat = _sub(commands, "chat", help="chat with a (fine-tuned) model")
    chat.add_argument("model_name", metavar="MODEL")
    compare = _sub(commands, "compare", help="answer prompts with a base and its adapters")
    compare.add_argument("base_model", metavar="BASE")
    compare.add_argument(
        "adapters",
        metavar="ADAPTER",
        nargs="*",
        help="fine-tuned models of BASE (default: all of them)",
    )
    compare.add_argument("--prompt", dest="prompts", action="append", required=True)
    evaluate = _sub(
        commands,
        "evaluate",
        help="validation loss and perplexity of a fine-tuned model vs its base",
    )
    evaluate.add_argument("model_name", metavar="MODEL")
    evaluate.add_argument("dataset", metavar="DATASET")
    evaluate.add_argument(
        "--all",
        dest="split",
        action="store_const",
        const="all",
        default="valid",
        help="score every record, not the held-out split",
    )
    tune = _sub(commands, "tune", help="search learning rate and rank within a time budget")
    tune.add_argument("model_name", metavar="MODEL")
    tune.add_argument("dataset", metavar="DATASET")
    tune.add_argument(
        "--budget",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="total search time (default 120)",
    )
    tune.add_argument("--trials", type=int, default=None, help="number of candidates")
    report = _sub(
        commands,
        "report",
        help="data-quality report of a dataset: score, top fixes, duplicates, leaks",
    )
    report.add_argument("dataset", metavar="DATASET")
    report.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the report as a standalone HTML page to FILE",
    )
    export = _sub(
        commands,
        "export",
        help="export a fine-tuned model for mlx, hf, gguf, ollama or lmstudio (verified)",
    )
    export.add_argument("model_name", metavar="MODEL")
    export.add_argument("target", choices=("mlx", "hf", "gguf", "ollama", "lmstudio"))
    export.add_argument(
        "--quantization", choices=("f16", "q8_0", "q4_k_m"), help="gguf/ollama (default f16)"
    )
    export.add_argument("--no-verify", dest="verify", action="store_false")
    export.add_argument("--lmstudio-root", help="LM Studio's folder (default ~/.lmstudio)")
    export.add_argument(
        "--pre-tokenizer", help="llama.cpp's pre-tokenizer, for a tokenizer it does not know"
    )
    delete = _sub(commands, "delete", help="delete a fine-tuned model (never a base model)")
    delete.add_argument("model_name", metavar="MODEL")
    resume = _sub(commands, "resume", help="resume a cancelled or interrupted job")
    resume.add_argument("job_id", metavar="JOB")
    cancel = _sub(commands, "cancel", help="cancel a running job")
    cancel.add_argument("job_id", metavar="JOB")
    return parser


def _sub(commands: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, **kwargs)
    add_options(parser, suppress=True)
    return parser


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``FIELD=VALUE`` pairs into config overrides (snake_case names are accepted)."""
    from cortex_rpc.config.training_config import snake_to_camel

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"cortex-finetune: --set expects FIELD=VALUE, got {pair!r}")
        overrides[snake_to_camel(key.strip())] = parse_value(value)
    return overrides


def answers_from(args: argparse.Namespace) -> WizardAnswers:
    return WizardAnswers(
        model=args.model,
        data=args.data,
        data_option="sample" if args.sample else None,
        preset=args.preset or ("balanced" if args.yes else None),
        method=args.method,
        name=args.name,
        overrides=parse_overrides(args.overrides),
        chat=True if args.chat else (False if args.yes else None),
        prompts=list(args.chat),
    )


async def run_wizard(client: CortexClient, term: Terminal, args: argparse.Namespace) -> int:
    result = await Wizard(client, term, answers_from(args)).run()
    return 0 if result.state in ("completed", "detached", "not-started") else 1


async def run_demo(client: CortexClient, term: Terminal, args: argparse.Namespace) -> int:
    """Run the demo and say how long it took (the README quotes that figure)."""
    started = time.monotonic()
    try:
        return await _demo(client, term, args)
    finally:
        seconds = time.monotonic() - started
        term.say(f"cortex-finetune demo: wall time {seconds:.1f} s")
        term.event("wallTime", seconds=seconds)


async def _demo(client: CortexClient, term: Terminal, args: argparse.Namespace) -> int:
    """Generate a tiny model, fine-tune it on the sample dataset, and ask it a sample question."""
    home = cortex_home()
    model_dir = home / "models" / DEMO_MODEL
    term.say(f"cortex-finetune demo: CORTEX_HOME={home}", style="bold")
    if not (model_dir / "config.json").exists():
        term.say(f"Generating a tiny Llama model at {model_dir} (random weights, offline)...")
        # In a child process: this client never loads MLX (at exit, MLX's threads in a
        # process that only borrowed it can abort with "terminate called ...").
        sizes = [f"--{key.replace('_', '-')}={value}" for key, value in DEMO_MODEL_SPEC.items()]
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cortex_rpc.models.tiny",
            str(model_dir),
            *sizes,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, error = await child.communicate()
        if child.returncode != 0:
            raise WizardAborted(f"could not generate the demo model: {error.decode()[-500:]}")
    name = await demo_name(client, term, args)
    answers = WizardAnswers(
        model=str(model_dir),
        data_option="sample",
        preset=args.preset or "quick",
        name=name,
        overrides={**DEMO_OVERRIDES, **parse_overrides(args.overrides)},
        chat=False,
    )
    result = await Wizard(client, term, answers).run()
    if result.state != "completed":
        return 1
    term.heading("Models")
    await run_models(client, term)
    code = await _demo_check(client, term, result)
    program = cortex_finetune()
    term.say(f"Remove {name} with:  {program} delete {name}")
    term.say(f"Train it again under the same name with:  {program} demo --name {name} --replace")
    return code


async def demo_name(client: CortexClient, term: Terminal, args: argparse.Namespace) -> str:
    """Return the name the demo trains: ``--name`` (default demo-custom), freed first when the
    user agrees to replace an earlier fine-tune of that name.

    Without a terminal only ``--replace`` or ``--yes`` agree; the default name then moves on
    to the next free ``demo-custom-N`` and an explicit ``--name`` stops the demo.
    """
    models = {m["name"]: m for m in await client.list_models()}
    wanted = args.name or DEMO_NAME
    existing = models.get(wanted)
    if existing is None:
        return wanted
    if existing.get("kind") != "fine-tuned":
        raise WizardAborted(f"{wanted!r} is a base model ({existing['path']}); pick another --name")
    replace = args.replace or args.yes
    if not replace and sys.stdin.isatty():
        # The demo's own terminal accepts every question; this one is asked for real.
        replace = await Terminal(json_mode=term.json_mode).confirm(
            f"A fine-tuned model named {wanted!r} exists ({existing['path']}). Replace it?",
            default=False,
        )
    if replace:
        removed = await client.delete_model(wanted)
        term.say(f"Removed the earlier {wanted} ({human_bytes(removed['freedBytes'])} freed)")
        term.event("deleted", **removed)
        return wanted
    if args.name:
        raise WizardAborted(
            f"A fine-tuned model named {wanted!r} exists; pass --replace to replace it, "
            "or choose another --name"
        )
    name = free_name(wanted, set(models))
    term.say(
        f"{wanted} exists from an earlier demo, so this one is {name}; reuse the name with "
        f"--name {wanted} --replace"
    )
    return name


async def _demo_check(client: CortexClient, term: Terminal, result: WizardResult) -> int:
    """Ask the new model a training question and compare with the answer it was taught."""
    marker = json.loads((Path(result.output_path or "") / "fine-tuned.marker").read_text())
    first = json.loads(Path(marker["dataset"]["trainPath"]).read_text().splitlines()[0])
    prompt = first["messages"][0]["content"]
    expected = first["messages"][-1]["content"]
    term.heading("Try it")
    await chat_loop(client, term, result.output_name or "", [prompt])
    reply = (await client.generate(result.output_name or "", prompt, max_tokens=96))["text"]
    similarity = difflib.SequenceMatcher(None, reply.strip(), expected.strip()).ratio()
    term.say(f"Taught answer: {expected}")
    term.event("demo", prompt=prompt, expected=expected, reply=reply, similarity=similarity)
    if similarity >= 0.8:
        term.say(
            f"✓ The fine-tuned model reproduces what it was taught (similarity {similarity:.0%}).",
            style="green",
        )
        return 0
    term.say(
        f"✗ The reply differs from the taught answer (similarity {similarity:.0%}).", style="red"
    )
    return 1


async def run_models(client: CortexClient, term: Terminal) -> int:
    from rich.table import Table

    models = await client.list_models()
    term.event("models", models=models)
    if term.json_mode:
        return 0
    if not models:
        term.say(
            "No models found. Put MLX / Hugging Face model folders in "
            f"{cortex_home() / 'models'} or pass --model-dir."
        )
        return 0
    table = Table("Name", "Category", "Params", "Size", "Fine-tuned", "Path")
    for m in models:
        table.add_row(
            m["name"],
            str(m.get("category") or "?"),
            human_params(m.get("parameters")),
            human_bytes(m.get("sizeBytes")),
            "yes" if m.get("kind") == "fine-tuned" else "",
            m["path"],
        )
    term.rich(table)
    return 0


async def run_gpu(client: CortexClient, term: Terminal) -> int:
    info = await client.system_info()
    term.event("systemInfo", **info)
    if term.json_mode:
        return 0
    memory = info["memory"]
    blas = info.get("blas")
    term.say(f"Backend:  {info['backend']} ({info.get('device')})")
    term.say(
        f"Memory:   {human_bytes(memory['availableBytes'])} available of "
        f"{human_bytes(memory['totalBytes'])}"
    )
    term.say(f"BLAS:     {blas['name'] + ' (' + blas['path'] + ')' if blas else 'built-in'}")
    versions = info["versions"]
    term.say(
        f"Versions: cortex-rpc {versions.get('cortexRpc')}, mlx {versions.get('mlx')}, "
        f"mlx-lm {versions.get('mlxLm')}, Python {versions.get('python')}"
    )
    for warning in info.get("warnings", []):
        term.say(f"⚠ {warning}", style="yellow")
    return 0


def tensorboard_command(jobs: list[dict[str, Any]]) -> str | None:
    """Return ``tensorboard --logdir DIR`` for the folder holding every job (None: no jobs).

    Each job writes its event files to ``JOB/tensorboard``; their common folder shows every
    job as a run of its own.
    """
    dirs = {str(Path(job["logDir"]).parent.parent) for job in jobs if job.get("logDir")}
    if not dirs:
        return None
    root = os.path.commonpath(sorted(dirs))
    return f"tensorboard --logdir {shlex.quote(root)}"


async def run_jobs(client: CortexClient, term: Terminal, logdir: bool = False) -> int:
    jobs = await client.list_jobs()
    if logdir:
        command = tensorboard_command(jobs)
        term.event("logdir", command=command)
        term.say(command or "No training jobs yet.")
        return 0
    term.event("jobs", jobs=jobs)
    for job in jobs:
        term.say(
            f"{job['jobId']}  {job['state']:<11} {job.get('outputName') or '':<24} "
            f"{job.get('iteration') or 0}/{job.get('totalIterations') or '?'}  "
            f"{job.get('message') or ''}"
        )
    if not jobs and not term.json_mode:
        term.say("No training jobs yet.")
    return 0


async def run_batch(client: CortexClient, term: Terminal, args: argparse.Namespace) -> int:
    """Fine-tune the same base model on each dataset of a folder, one after the other."""
    files = sorted(
        p
        for p in args.directory.iterdir()
        if p.suffix in (".jsonl", ".json", ".csv", ".txt") and p.is_file()
    )
    if not files:
        term.say(f"No datasets (*.jsonl, *.json, *.csv, *.txt) in {args.directory}")
        return 1
    if args.model is None:
        raise WizardAborted("batch needs --model")
    failures = 0
    base = Path(args.model).name
    for path in files:
        term.heading(f"Batch: {path.name}")
        answers = answers_from(args)
        answers.data, answers.data_option = str(path), "file"
        answers.name = f"{args.name or base}-{path.stem}"
        answers.chat = False
        try:
            result = await Wizard(client, term, answers).run()
        except WizardAborted as error:
            term.say(f"✗ {path.name}: {error}", style="red")
            failures += 1
            continue
        failures += result.state != "completed"
    term.say(f"Batch finished: {len(files) - failures} of {len(files)} trained.")
    return 1 if failures else 0


async def run_compare(client: CortexClient, term: Terminal, args: argparse.Namespace) -> int:
    """Show the base's and each adapter's answer to the same prompts side by side."""
    from rich.table import Table

    adapters = args.adapters or [a["name"] for a in await client.list_adapters(args.base_model)]
    if not adapters:
        term.say(f"No fine-tuned models of {args.base_model} yet.")
        return 1
    result = await client.compare_adapters(args.base_model, adapters, args.prompts)
    term.event("comparison", **result)
    if term.json_mode:
        return 0
    table = Table("Prompt", *[o["model"] for o in result["rows"][0]["outputs"]], show_lines=True)
    for row in result["rows"]:
        table.add_row(row["prompt"], *[o["text"].strip() for o in row["outputs"]])
    term.rich(table)
    return 0


async def run_evaluate(client: CortexClient, term: Terminal, args: argparse.Namespace) -> int:
    """Score base and fine-tuned model on the same held-out records."""
    term.say(f"Evaluating {args.model_name} and its base on {args.dataset} ({args.split})…")
    result = await client.evaluate(args.model_name, args.dataset, split=args.split)
    term.event("evaluation", **result)
    term.say(
        f"{result['examples']} examples · loss {result['baseLoss']:.3f} -> "
        f"{result['loss']:.3f} · perplexity {result['basePerplexity']:.1f} -> "
        f"{result['perplexity']:.1f}  ({result['seconds']:.1f} s)"
    )
    return 0


async def run_export(client: CortexClient, term: Terminal, args: argparse.Namespace) -> int:
    """Export a fine-tune and say where it is, how it verified, and what to run next."""
    term.say(f"Exporting {args.model_name} for {args.target}…")
    result = await client.export_model(
        args.model_name,
        args.target,
        name=args.name,  # the wizard's --name: here the export's (default MODEL-TARGET)
        quantization=args.quantization,
        verify=args.verify,
        lmstudio_root=args.lmstudio_root,
        pre_tokenizer=args.pre_tokenizer,
    )
    term.event("export", **result)
    term.say(f"{result['path']} ({result['sizeBytes'] / 1e6:.1f} MB, {result['seconds']:.1f} s)")
    verification = result.get("verification")
    if verification and verification["status"] == "passed":
        term.say(
            f"verified with {verification['tool']}: {verification['tokenAgreement']:.0%} of "
            f"greedy tokens agree, largest logit difference {verification['maxLogitDiff']:.2g}"
        )
    elif verification:
        term.say(f"not verified: {verification.get('reason')}", style="yellow")
    for command in result["nextCommands"]:
        term.say(f"  {command}")
    return 0


def tuning_line(note: dict[str, Any]) -> str | None:
    """One terminal line for a ``cortex/tuningProgress`` payload (None: nothing to show)."""
    trial = note.get("trial")
    if note.get("event") == "plan":
        return (
            f"Plan: {note.get('candidates')} candidates, "
            f"{note.get('firstRoundIterations')} iterations each in round 1"
        )
    if not trial:
        return None
    config = trial.get("config", {})
    val = trial.get("valLoss")
    score = f"val loss {val:.4f}" if isinstance(val, (int, float)) else trial.get("state", "")
    return (
        f"  trial {trial.get('index')} (round {trial.get('round')}): lr "
        f"{config.get('learningRate'):g}, rank {config.get('loraRank')}, "
        f"{trial.get('iterations')} it, {trial.get('seconds', 0):.1f} s · {score}  "
        f"[{note.get('usedSeconds', 0):.0f}/{note.get('budgetSeconds', 0):.0f} s]"
    )


async def run_tune(client: CortexClient, term: Terminal, args: argparse.Namespace) -> int:
    """Search hyperparameters within the budget and print the config to train with."""

    def show(note: dict[str, Any]) -> None:
        term.event("tuning", **note)
        line = tuning_line(note)
        if line:
            term.say(line)

    term.say(f"Searching for {args.budget:.0f} s on {args.model_name} with {args.dataset}…")
    result = await client.tune_hyperparameters(
        args.model_name, args.dataset, args.budget, trials=args.trials, on_progress=show
    )
    term.event("tuned", **result)
    best = result["bestConfig"]
    overrides = " ".join(
        f"--set {key}={best[key]}"
        for key in ("learningRate", "loraRank", "loraAlpha", "iterations")
        if key in best
    )
    balanced = result.get("balancedValLoss")
    term.say(
        f"Best: val loss {result['best']['valLoss']:.4f} (Balanced: "
        f"{f'{balanced:.4f}' if isinstance(balanced, (int, float)) else 'not measured'}) "
        f"after {result['usedSeconds']:.0f} s"
    )
    term.say(
        f"Train with it: {cortex_finetune()} --model {args.model_name} --data {args.dataset} "
        f"{overrides}"
    )
    return 0


async def run_report(client: CortexClient, term: Terminal, args: argparse.Namespace) -> int:
    """Print the dataset's quality report as Markdown (or write it to a file as HTML)."""
    render = "html" if args.html else "json" if term.json_mode else "markdown"
    report = await client.dataset_report(args.dataset, args.model, format=render)
    if args.html:
        args.html.write_text(report.pop("html"), encoding="utf-8")
        term.say(f"Report written to {args.html} (score {report['score']}/100)")
    term.event("report", **report)
    if render == "markdown":
        sys.stdout.write(report["markdown"])
        sys.stdout.flush()
    return 0


async def run_resume(client: CortexClient, term: Terminal, job_id: str) -> int:
    queue = client.subscribe("cortex/trainingProgress")
    job = await client.resume_training(job_id)
    wizard = Wizard(client, term, WizardAnswers())
    wizard.name = job.get("outputName") or ""
    result = await wizard.follow(job_id, queue, job.get("outputPath") or "")
    return 0 if result.state in ("completed", "detached") else 1


async def main_async(args: argparse.Namespace) -> int:
    term = Terminal(json_mode=args.json, assume_yes=args.yes or args.command == "demo")
    options = {"modelDirs": [str(Path(d).resolve()) for d in args.model_dirs]}
    try:
        async with CortexClient(initialization_options=options) as client:
            if args.command == "demo":
                return await run_demo(client, term, args)
            if args.command == "models":
                return await run_models(client, term)
            if args.command == "gpu":
                return await run_gpu(client, term)
            if args.command == "jobs":
                return await run_jobs(client, term, args.logdir)
            if args.command == "batch":
                return await run_batch(client, term, args)
            if args.command == "chat":
                await chat_loop(client, term, args.model_name, list(args.chat))
                return 0
            if args.command == "compare":
                return await run_compare(client, term, args)
            if args.command == "evaluate":
                return await run_evaluate(client, term, args)
            if args.command == "export":
                return await run_export(client, term, args)
            if args.command == "tune":
                return await run_tune(client, term, args)
            if args.command == "report":
                return await run_report(client, term, args)
            if args.command == "delete":
                removed = await client.delete_model(args.model_name)
                term.event("deleted", **removed)
                term.say(f"Deleted {removed['path']} ({human_bytes(removed['freedBytes'])} freed)")
                return 0
            if args.command == "resume":
                return await run_resume(client, term, args.job_id)
            if args.command == "cancel":
                job = await client.cancel_training(args.job_id)
                term.say(f"{job['jobId']}: {job['state']}")
                return 0
            return await run_wizard(client, term, args)
    except WizardAborted as error:
        term.say(f"Aborted: {error}", style="red")
        term.event("aborted", message=str(error))
        return 2
    except CortexRpcError as error:
        term.say(f"✗ {error.message}", style="red")
        term.event("error", code=error.code, message=error.message, data=error.data)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("\nAborted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
