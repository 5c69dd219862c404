"""The guide's fine-tuning wizard, step for step, over a CortexClient.

Every step asks only what its flag did not already answer, so the same code runs the
interactive wizard, ``--yes`` scripted runs and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Column

from cortex_rpc.paths import cortex_home, suggest_model_name, validate_model_name
from cortex_rpc.units import human_bytes, human_duration, human_params

from . import commands
from .client import TERMINAL_STATES, CortexClient, CortexRpcError
from .terminal import Terminal, WizardAborted, read_line

PRESETS = [
    ("quick", "Quick    (fast experimentation)"),
    ("balanced", "Balanced (recommended for most cases)"),
    ("quality", "Quality  (best results, longer training)"),
    ("expert", "Expert   (full customization)"),
]
# The fields Expert asks for, in order, with their prompt labels.
EXPERT_FIELDS = [
    ("epochs", "Epochs"),
    ("learningRate", "Learning rate"),
    ("loraRank", "LoRA rank"),
    ("loraAlpha", "LoRA alpha"),
    ("loraDropout", "LoRA dropout"),
    ("batchSize", "Batch size"),
    ("gradAccumulationSteps", "Gradient accumulation steps"),
    ("numLayers", "Layers with adapters"),
    ("maxSeqLength", "Max sequence length"),
    ("quantizationBits", "Quantization bits (none, 4 or 8)"),
    ("fineTuneType", "Fine-tune type (lora, dora, full)"),
    ("lrSchedule", "Learning-rate schedule (constant, cosine, linear)"),
    ("warmupRatio", "Warmup (fraction of the updates)"),
    ("lrFloorRatio", "Final learning rate (fraction of the peak)"),
    ("optimizer", "Optimizer (adam, adamw, adafactor, muon)"),
    ("weightDecay", "Weight decay (adamw, adafactor, muon)"),
    ("keepBest", "Keep the best-validation adapter (true, false)"),
    ("earlyStopping", "Early stopping patience (evaluations, none = off)"),
]
# Asked only for preference data (the proposal's dataset kind is "preference").
METHODS = [
    ("sft", "SFT   (learn the chosen answers only; rejected ones are ignored)"),
    ("dpo", "DPO   (recommended: prefer chosen over rejected, against the base model)"),
    ("orpo", "ORPO  (SFT plus an odds-ratio penalty on rejected; no reference model)"),
]
METHOD_NAMES = {"sft": "SFT", "dpo": "DPO (preference pairs)", "orpo": "ORPO (preference pairs)"}
MIN_RECOMMENDED_EXAMPLES = 5
STATE_FILE = "wizard.json"


@dataclass
class WizardAnswers:
    """What the user chose (or passed as flags); None means "ask"."""

    model: str | None = None
    data: str | None = None
    data_option: str | None = None  # "file", "create" or "sample"
    preset: str | None = None
    method: str | None = None  # "sft", "dpo" or "orpo"; asked for preference data only
    name: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    chat: bool | None = None  # load and chat after training
    prompts: list[str] = field(default_factory=list)  # scripted chat prompts


@dataclass
class WizardResult:
    """The finished (or not) job, for the CLI's exit code and the demo."""

    state: str
    job_id: str | None = None
    output_name: str | None = None
    output_path: str | None = None
    message: str = ""
    final: dict[str, Any] = field(default_factory=dict)


def _remember(key: str, value: str) -> None:
    """Keep the last model used, so Step 1 can offer it next time."""
    path = cortex_home() / STATE_FILE
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(path.read_text()) if path.exists() else {}
        state[key] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2))


def _recall(key: str) -> str | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((cortex_home() / STATE_FILE).read_text()).get(key)
    return None


def tokens_line(proposal: dict[str, Any]) -> str:
    """Return what each example trains, from the proposal's ``trainingView`` ("" without one)."""
    view = proposal.get("trainingView")
    if not view:
        return ""
    trained = view["trainedTokens"]
    length = proposal["config"]["maxSeqLength"]
    return (
        f"Tokens trained per example: {trained['min']}/{trained['median']}/{trained['max']} "
        f"(min/median/max); {view['cut']} examples would be cut at maxSeqLength {length}"
        + (f", losing {view['lostTrainedTokens']:,} trained tokens" if view["cut"] else "")
    )


def schedule_line(config: dict[str, Any]) -> str:
    """Return the Training Summary's schedule row: optimizer, schedule, warmup, floor."""
    kind = config.get("lrSchedule", "constant")
    parts = [str(config.get("optimizer", "adam")), kind]
    if config.get("warmupSteps"):
        parts.append(f"{config['warmupSteps']} warmup updates")
    elif config.get("warmupRatio"):
        parts.append(f"{config['warmupRatio']:.0%} warmup")
    if kind != "constant":
        parts.append(f"to {config.get('lrFloorRatio', 0):.0%} of the peak")
    if config.get("earlyStopping"):
        parts.append(f"early stopping after {config['earlyStopping']['patience']} evaluations")
    return ", ".join(parts)


def preference_parts(note: dict[str, Any]) -> list[str]:
    """Return the progress of preference training: reward accuracy and margin, if present."""
    parts = []
    if note.get("rewardAccuracy") is not None:
        parts.append(f"Acc: {note['rewardAccuracy']:.0%}")
    if note.get("margin") is not None:
        parts.append(f"Margin: {note['margin']:.3f}")
    return parts


def parse_value(text: str) -> Any:
    """Turn ``--set``/Expert answers into JSON values: numbers, booleans, null, or text."""
    lowered = text.strip().lower()
    if lowered in ("none", "null", ""):
        return None
    try:
        return json.loads(lowered)
    except ValueError:
        return text.strip()


def free_name(wanted: str, taken: set[str]) -> str:
    """Return ``wanted``, or ``wanted-2``, ``wanted-3``... whichever is not taken yet."""
    candidate, number = wanted, 1
    while candidate in taken:
        number += 1
        candidate = f"{wanted}-{number}"
    return candidate


def progress_status(note: dict[str, Any]) -> str:
    """Return the progress line's text for one ``cortex/trainingProgress`` payload."""
    parts = []
    if note.get("totalEpochs"):
        epochs = max(1, round(note["totalEpochs"]))
        current = min(epochs, int(note.get("epoch") or 0) + 1)
        parts.append(f"Epoch {current}/{epochs}")
    if note.get("trainLoss") is not None:
        parts.append(f"Loss: {note['trainLoss']:.4f}")
    if note.get("valLoss") is not None:
        parts.append(f"Val: {note['valLoss']:.4f}")
    parts += preference_parts(note)
    if note.get("tokensPerSecond"):
        parts.append(f"{note['tokensPerSecond']:.0f} tok/s")
    if note.get("etaSeconds") is not None and note.get("state") == "running":
        parts.append(f"ETA {human_duration(note['etaSeconds'])}")
    if note.get("peakMemoryBytes"):
        parts.append(f"mem {human_bytes(note['peakMemoryBytes'])}")
    return " | ".join(parts) or str(note.get("message") or note.get("state"))


@dataclass
class PlainProgress:
    """Which progress payloads deserve a line when the output is a log, not a terminal.

    About ten lines a run: every tenth of the iterations, each new state, and the end.
    """

    steps: int = 10
    next_iteration: int = 0
    state: str | None = None

    def due(self, note: dict[str, Any]) -> bool:
        """Return True when ``note`` should be printed (and remember that it was)."""
        iteration, total = note.get("iteration") or 0, note.get("totalIterations") or 0
        changed = note.get("state") != self.state
        self.state = note.get("state")
        if not (changed or iteration >= self.next_iteration):
            return False
        if total:
            stride = max(1, total // self.steps)
            self.next_iteration = (iteration // stride + 1) * stride
        return True

    @staticmethod
    def position(note: dict[str, Any]) -> str:
        """Return ``iteration/total`` (or the state while there is no iteration yet)."""
        total = note.get("totalIterations")
        if note.get("iteration") is None or not total:
            return str(note.get("state") or "")
        return f"{note['iteration']}/{total} ({100 * note['iteration'] / total:.0f}%)"


class Wizard:
    """Runs the steps of the guide against a connected client."""

    def __init__(self, client: CortexClient, terminal: Terminal, answers: WizardAnswers) -> None:
        self.client = client
        self.term = terminal
        self.answers = answers
        self.model: dict[str, Any] = {}
        self.dataset: dict[str, Any] = {}
        self.proposal: dict[str, Any] = {}
        self.preset = answers.preset or "balanced"
        self.method = answers.method
        self.overrides: dict[str, Any] = dict(answers.overrides)
        self.name = answers.name or ""
        self._plain = PlainProgress()

    async def run(self) -> WizardResult:
        await self.select_model()
        await self.prepare_data()
        await self.configure()
        await self.name_model()
        if not await self.summary():
            self.term.say("Fine-tuning not started.")
            return WizardResult(state="not-started")
        result = await self.train()
        if result.state == "completed":
            self.show_result(result)
            await self.chat(result)
        return result

    # -- Step 1 ------------------------------------------------------------------------------

    async def select_model(self) -> None:
        self.term.heading("Step 1: Select Base Model")
        model = self.answers.model
        last = _recall("lastModel")
        if (
            model is None
            and last
            and self.term.interactive
            and await self.term.confirm(
                f"Use currently loaded model '{Path(last).name if Path(last).is_absolute() else last}'?"
            )
        ):
            model = last
        while True:
            if model is None:
                model = await self._pick_model()
            try:
                self.model = await self.client.inspect_model(model)
                break
            except CortexRpcError as error:
                self.term.say(f"✗ {error.message}", style="red")
                if not self.term.interactive:
                    raise WizardAborted(error.message) from error
                model = None
        self.model["path"] = str(Path(self.model["path"]).resolve())
        # A hub model is remembered by repo id: next time means its then-current snapshot.
        name = self.model["name"]
        _remember("lastModel", name if "/" in name else self.model["path"])
        self.term.say(
            f"✓ Model: {self.model['name']} ({self.model['category'].capitalize()}, "
            f"{human_params(self.model['parameters'])} params, "
            f"{human_bytes(self.model['sizeBytes'])})",
            style="green",
        )
        self.term.event("model", **self.model)

    async def _pick_model(self) -> str:
        models = [m for m in await self.client.list_models() if m.get("kind") != "fine-tuned"]
        if not models:
            self.term.say("No models found in the model folders or the Hugging Face cache.")
            return await self.term.ask("Enter path to a model directory", flag="--model PATH")
        labels = [
            f"{m['name']:<32} {str(m.get('category') or '?').capitalize():<7} "
            f"{human_params(m.get('parameters')):>7} params  {human_bytes(m.get('sizeBytes'))}"
            for m in models
        ]
        labels.append("Enter a path")
        index = await self.term.choose("Select model", labels, default=0)
        if index == len(models):
            return await self.term.ask("Enter path to a model directory", flag="--model PATH")
        return models[index]["path"]

    # -- Step 2 ------------------------------------------------------------------------------

    async def prepare_data(self) -> None:
        self.term.heading("Step 2: Prepare Training Data")
        path, option = self.answers.data, self.answers.data_option
        if path is not None and option is None:
            option = "file"
        while True:
            if option is None:
                index = await self.term.choose(
                    "Select option",
                    ["Use existing file", "Create dataset interactively", "Use sample dataset"],
                    flag="--data FILE (JSONL, JSON, CSV or TXT) or --sample",
                )
                option = ("file", "create", "sample")[index]
            if option == "file":
                if path is None:
                    path = await self.term.ask("Enter path to dataset", flag="--data FILE")
                path = str(Path(os.path.expanduser(path)).resolve())
            elif option == "create":
                path = await self._create_dataset(path)
            else:
                path = await self._sample_dataset(path)
            if await self._validate(path):
                return
            if not self.term.interactive:
                raise WizardAborted(f"Dataset {path} has errors")
            path, option = None, None

    async def _create_dataset(self, path: str | None) -> str:
        default = str(Path.cwd() / "cortex-dataset.jsonl")
        path = str(Path(path or await self.term.ask("Save the dataset as", default)).resolve())
        self.term.say("Enter prompt/response pairs; type 'done' as the prompt to finish.")
        examples: list[dict[str, str]] = []
        while True:
            prompt = await self.term.ask(f"Example {len(examples) + 1} prompt (or 'done')")
            if prompt.lower() == "done":
                if len(examples) >= MIN_RECOMMENDED_EXAMPLES or not examples:
                    if examples:
                        break
                    self.term.say("Add at least one example.", style="yellow")
                    continue
                self.term.say(
                    f"⚠ Only {len(examples)} examples; at least "
                    f"{MIN_RECOMMENDED_EXAMPLES} are recommended.",
                    style="yellow",
                )
                if await self.term.confirm("Add more examples?"):
                    continue
                break
            if not prompt:
                continue
            response = await self.term.ask("Response")
            if not response:
                self.term.say(
                    "A response cannot be empty; enter the example again.", style="yellow"
                )
                continue
            examples.append({"prompt": prompt, "response": response})
        overwrite = False
        if Path(path).exists():
            overwrite = await self.term.confirm(f"{path} exists. Overwrite it?", default=False)
            if not overwrite:
                raise WizardAborted(f"{path} exists; choose another path")
        created = await self.client.create_dataset(path, examples, overwrite=overwrite)
        for warning in created.get("warnings", []):
            self.term.say(f"⚠ {warning}", style="yellow")
        self.term.say(f"✓ Saved {created['examples']} examples to {created['path']}")
        return created["path"]

    async def _sample_dataset(self, path: str | None) -> str:
        path = path or str(cortex_home() / "datasets" / "sample_dataset.jsonl")
        written = await self.client.sample_dataset(path, overwrite=True)
        self.term.say(f"✓ Sample dataset written to {written['path']}")
        return written["path"]

    async def _validate(self, path: str) -> bool:
        try:
            report = await self.client.validate_dataset(path)
        except CortexRpcError as error:
            self.term.say(f"✗ {error.message}", style="red")
            return False
        problems = report["diagnostics"]
        errors = [d for d in problems if d.get("severity") == 1]
        self.term.event(
            "validation",
            path=path,
            ok=report["ok"],
            examples=report["examples"],
            diagnostics=problems,
        )
        for diagnostic in problems[:20]:
            line = diagnostic["range"]["start"]["line"] + 1
            column = diagnostic["range"]["start"]["character"] + 1
            kind = "error" if diagnostic.get("severity") == 1 else "warning"
            self.term.say(
                f"  {Path(path).name}:{line}:{column}: {kind} "
                f"[{diagnostic.get('code')}] {diagnostic['message']}",
                style="red" if kind == "error" else "yellow",
            )
        if len(problems) > 20:
            self.term.say(f"  ... and {report.get('total', len(problems)) - 20} more")
        if not report["ok"] or errors:
            self.term.say(
                f"✗ Dataset has {len(errors)} error(s); fix them and try again.", style="red"
            )
            return False
        self.dataset = {"path": path, **report}
        self.term.say(f"✓ Dataset validated: {report['examples']} examples", style="green")
        return True

    # -- Step 3 ------------------------------------------------------------------------------

    async def configure(self) -> None:
        self.term.heading("Step 3: Configure Training")
        detected = await self.client.propose_config(self.model["path"], self.dataset["path"])
        data = detected.get("dataset") or {}
        self.term.say("Smart Configuration detected:")
        self.term.say(
            f"  Model: {self.model['category'].capitalize()} "
            f"({human_params(self.model['parameters'])} params, "
            f"{human_bytes(self.model['sizeBytes'])})"
        )
        self.term.say(
            f"  Dataset: {str(data.get('sizeClass', '?')).capitalize()} "
            f"({data.get('examples', self.dataset['examples'])} examples)"
        )
        self.term.say(f"  Task type: {str(data.get('taskType', '?')).capitalize()}")
        self.term.say()
        if data.get("kind") == "preference" and self.method is None:
            self.term.say("The dataset holds preference pairs (prompt, chosen, rejected).")
            self.method = METHODS[
                await self.term.choose(
                    "Training method", [label for _, label in METHODS], default=1
                )
            ][0]
            self.term.say()
        preset = self.answers.preset
        if preset is None:
            self.term.say("Select training preset:")
            preset = PRESETS[
                await self.term.choose("Select preset", [label for _, label in PRESETS], default=1)
            ][0]
        overrides = dict(self.answers.overrides)
        if preset == "expert" and self.term.interactive:
            overrides = await self._ask_expert(preset, overrides)
        while True:
            try:
                self.proposal = await self.client.propose_config(
                    self.model["path"],
                    self.dataset["path"],
                    preset,
                    overrides or None,
                    method=self.method,
                )
                break
            except CortexRpcError as error:
                self.term.say(f"✗ {error.message}", style="red")
                code = (error.data or {}).get("code")
                if not self.term.interactive or code == "method-needs-preference-data":
                    raise WizardAborted(error.message) from error
                overrides = await self._ask_expert(preset, overrides)
        self.preset, self.overrides = preset, overrides
        self.term.say()
        self.term.say("⚡ Smart configuration applied:")
        for note in self.proposal["explanations"]:
            self.term.say(f"   {note}")
        line = tokens_line(self.proposal)
        if line:
            self.term.say(line)
        if not self.proposal.get("fitsInMemory", True):
            self.term.say("⚠ This configuration may not fit in memory.", style="yellow")
        self.term.event("config", **self.proposal)

    async def _ask_expert(self, preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
        proposed = (
            await self.client.propose_config(
                self.model["path"], self.dataset["path"], preset, method=self.method
            )
        )["config"]
        chosen = dict(overrides)
        self.term.say("Press Enter to keep the proposed value.")
        for key, label in EXPERT_FIELDS:
            current = chosen.get(key, proposed.get(key))
            if key == "earlyStopping" and isinstance(current, dict):
                current = current.get("patience")  # asked as a patience; minDelta stays 0
            shown = "none" if current is None else str(current).lower()
            answer = await self.term.ask(f"  {label}", shown)
            value = parse_value(answer)
            if key == "earlyStopping" and value is not None:
                value = {"patience": value}
            if value != proposed.get(key):
                chosen[key] = value
            else:
                chosen.pop(key, None)
        return chosen

    # -- Step 4 ------------------------------------------------------------------------------

    async def name_model(self) -> None:
        self.term.heading("Step 4: Name Your Model")
        taken = {m["name"] for m in await self.client.list_models()}
        candidate = free_name(suggest_model_name(self.model["name"]), taken)
        name = self.answers.name
        while True:
            if name is None:
                name = await self.term.ask("Enter name for fine-tuned model", candidate)
            try:
                validate_model_name(name)
            except Exception as error:  # noqa: BLE001 - InvalidParams, shown to the user
                problem = str(getattr(error, "message", error))
            else:
                problem = f"A model named '{name}' already exists" if name in taken else None
            if problem is None:
                self.name = name
                return
            self.term.say(f"✗ {problem}", style="red")
            if not self.term.interactive:
                raise WizardAborted(problem)
            name = None

    # -- Summary and training ----------------------------------------------------------------

    async def summary(self) -> bool:
        config = self.proposal["config"]
        data = self.proposal.get("dataset") or {}
        estimate = self.proposal.get("estimate") or {}
        batch = f"{config['batchSize']}"
        if config.get("gradAccumulationSteps", 1) > 1:
            batch += f" (x{config['gradAccumulationSteps']} acc.)"
        self.term.heading("Training Summary")
        rows = [
            ("Base model", self.model["name"]),
            ("Output model", self.name),
            ("Dataset", f"{Path(self.dataset['path']).name} ({self.dataset['examples']} examples)"),
            ("", ""),
            (
                "Model size",
                f"{self.model['category'].capitalize()} "
                f"({human_params(self.model['parameters'])} params)",
            ),
            ("Task type", str(data.get("taskType", "?")).capitalize()),
            ("Config source", f"Smart {self.preset.capitalize()}"),
            ("", ""),
            ("Method", METHOD_NAMES.get(config.get("method", "sft"), "SFT")),
            ("Epochs", f"{config['epochs']:g} ({config['iterations']} iterations)"),
            ("Learning rate", f"{config['learningRate']:g}"),
            ("Schedule", schedule_line(config)),
            ("LoRA rank", str(config["loraRank"])),
            ("Batch size", batch),
        ]
        if config.get("method") == "dpo":
            rows.append(("Beta", f"{config['beta']:g} ({config.get('dpoLoss', 'sigmoid')} loss)"))
        elif config.get("method") == "orpo":
            rows.append(("ORPO lambda", f"{config['orpoLambda']:g}"))
        if config.get("quantizationBits"):
            rows.append(("Quantization", f"{config['quantizationBits']}-bit (QLoRA)"))
        self.term.say("Configuration:")
        for label, value in rows:
            self.term.say(f"  {label + ':':<15}{value}" if label else "")
        if estimate.get("seconds") is not None:
            # The basis says whether it comes from this machine's runs or the prior model.
            parts = str(estimate.get("basis") or "").split("; ")
            basis = "; ".join(parts[:1] + [p for p in parts[1:] if "current load" in p])
            self.term.say(
                f"\n  Estimated time: ~{human_duration(estimate['seconds'])}"
                + (f" ({basis})" if basis else "")
            )
        memory = self.proposal.get("memory") or {}
        if estimate.get("peakMemoryBytes") and memory.get("budgetBytes"):
            self.term.say(
                f"  Peak memory:    ~{human_bytes(estimate['peakMemoryBytes'])} "
                f"(MLX peak; {human_bytes(memory['budgetBytes'])} usable)"
            )
        self.term.say()
        return await self.term.confirm("Start fine-tuning?")

    async def train(self) -> WizardResult:
        queue = self.client.subscribe("cortex/trainingProgress")
        started = await self.client.start_training(
            self.model["path"],
            self.dataset["path"],
            self.name,
            preset=self.preset,
            config=self.overrides or None,
            method=self.proposal.get("config", {}).get("method", self.method),
        )
        job_id = started["jobId"]
        self.term.event("started", **started)
        self.term.say("\n⚡ Starting fine-tuning...")
        return await self.follow(job_id, queue, started["outputPath"])

    async def follow(self, job_id: str, queue: asyncio.Queue, output_path: str) -> WizardResult:
        """Show a job's progress until it ends; Ctrl-C asks to cancel or detach."""
        interrupts = asyncio.Queue()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, interrupts.put_nowait, True)
        progress = Progress(
            TextColumn("   "),
            BarColumn(bar_width=20, table_column=Column(min_width=20)),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.term.console,
            transient=False,
            # Not a terminal: rich would print only the last frame; plain lines instead.
            disable=self.term.json_mode or not self.term.console.is_terminal,
        )
        self._plain = PlainProgress()
        task = progress.add_task("train", total=None, status="Queued")
        final: dict[str, Any] = {}
        notes = self.client.training_progress(job_id, queue)
        try:
            with progress:
                next_note = asyncio.ensure_future(anext(notes))
                next_interrupt = asyncio.ensure_future(interrupts.get())
                while True:
                    done, _ = await asyncio.wait(
                        {next_note, next_interrupt}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if next_interrupt in done:
                        next_interrupt = asyncio.ensure_future(interrupts.get())
                        progress.stop()
                        action = await self._on_interrupt(interrupts)
                        if action == "detach":
                            await self.client.detach()
                            self.term.say(
                                f"Detached: job {job_id} keeps training; its model "
                                f"will be saved to {output_path}."
                            )
                            next_note.cancel()
                            return WizardResult("detached", job_id, self.name, output_path)
                        if action == "cancel":
                            await self.client.cancel_training(job_id)
                            self.term.say("Cancelling (the last checkpoint is kept)...")
                        progress.start()
                    if next_note in done:
                        try:
                            note = next_note.result()
                        except StopAsyncIteration:
                            break
                        final = note
                        self._show_progress(progress, task, note)
                        if note.get("state") in TERMINAL_STATES:
                            break
                        next_note = asyncio.ensure_future(anext(notes))
                next_interrupt.cancel()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        state = final.get("state", "failed")
        message = final.get("message", "")
        if state == "cancelled":
            self.term.say(
                f"✗ Training cancelled. Resume it with: {commands.cortex_finetune()} resume "
                f"{job_id}",
                style="yellow",
            )
        elif state != "completed":
            self.term.say(f"✗ Training {state}: {message}", style="red")
        return WizardResult(
            state, job_id, self.name, final.get("outputPath") or output_path, message, final
        )

    async def _on_interrupt(self, interrupts: asyncio.Queue) -> str:
        """Ask what a Ctrl-C meant; a second Ctrl-C while asking cancels."""
        if not self.term.interactive:
            return "cancel"
        self.term.say(
            "\nInterrupted. [c]ancel training (keeps the checkpoint), [d]etach "
            "(training continues), or Enter to keep watching? Ctrl-C again cancels."
        )
        answer = asyncio.ensure_future(self.term.ask("Choice", ""))
        second = asyncio.ensure_future(interrupts.get())
        done, _ = await asyncio.wait({answer, second}, return_when=asyncio.FIRST_COMPLETED)
        if second in done:
            answer.cancel()
            return "cancel"
        second.cancel()
        choice = answer.result().strip().lower()
        return {"c": "cancel", "d": "detach"}.get(choice[:1], "continue")

    def _show_progress(self, progress: Progress, task: Any, note: dict[str, Any]) -> None:
        self.term.event("progress", **note)
        if note.get("event") == "warning" and note.get("message"):
            progress.console.print(f"   ⚠ {note['message']}", style="yellow", markup=False)
        status = progress_status(note)
        if progress.disable and not self.term.json_mode and self._plain.due(note):
            self.term.say(f"   {self._plain.position(note)} | {status}")
        progress.update(
            task,
            total=note.get("totalIterations"),
            completed=note.get("iteration") or 0,
            status="| " + status,
        )

    # -- Result and chat ---------------------------------------------------------------------

    def show_result(self, result: WizardResult) -> None:
        path = result.output_path
        self.term.say("\n✓ Fine-tuning completed!", style="green")
        self.term.say(f"📁 Model saved to: {path}")
        self.term.say("💡 To load your fine-tuned model:")
        self.term.say(f"   {commands.cortex_finetune()} chat {result.output_name}")
        self.term.say(
            f"   {commands.python()} -c \"from mlx_lm import load; load('{self.model['path']}', "
            f"adapter_path='{path}')\""
        )
        self.term.say()
        self.term.say(f"   LoRA adapter size: {human_bytes(result.final.get('adapterBytes'))}")
        self.term.say(f"   Base model: {self.model['name']}")
        if result.final.get("stopReason") == "early-stopping":
            self.term.say(
                f"   Stopped early at iteration {result.final.get('iteration')}: validation "
                "loss had stopped improving"
            )
        kept = result.final.get("keptIteration")
        if kept is not None and kept != result.final.get("iteration"):
            self.term.say(
                f"   Kept the best adapter: iteration {kept} (validation loss "
                f"{result.final.get('bestValLoss') or 0:.3f}; the last one had "
                f"{result.final.get('valLoss') or 0:.3f})"
            )
        evaluation = result.final.get("evaluation") or {}
        if evaluation.get("basePerplexity") and evaluation.get("perplexity"):
            self.term.say(
                f"   Validation perplexity: {evaluation['basePerplexity']:.1f} -> "
                f"{evaluation['perplexity']:.1f} (loss {evaluation['baseValLoss']:.3f}"
                f" -> {evaluation['valLoss']:.3f})"
            )
        if result.final.get("lossCurvePath"):
            self.term.say(f"   Loss curve: {result.final['lossCurvePath']}")
        self.term.event("completed", **result.final)

    async def chat(self, result: WizardResult) -> None:
        wanted = self.answers.chat
        if wanted is None:
            wanted = self.term.interactive and await self.term.confirm(
                f"Load '{result.output_name}' now?"
            )
        if not wanted:
            return
        await chat_loop(self.client, self.term, result.output_name or "", self.answers.prompts)


async def chat_loop(
    client: CortexClient, term: Terminal, model: str, prompts: list[str] | None = None
) -> None:
    """Answer ``prompts`` if given; else each line typed at the terminal until an empty one,
    or each line of piped stdin until its end.

    The model is loaded (one token generated) before anything says it is, so a wrong name
    fails here with the server's error.
    """
    term.say(f"Loading {model}...")
    await client.generate(model, "Hello", max_tokens=1)
    scripted = list(prompts or [])
    typed = not scripted and sys.stdin.isatty()
    if typed:
        term.say("✓ Model loaded successfully! (empty line to finish)", style="green")
    elif scripted:
        term.say("✓ Model loaded successfully!", style="green")
    else:
        term.say("✓ Model loaded successfully! Answering each line of stdin.", style="green")
    while True:
        if scripted:
            prompt = scripted.pop(0)
        elif prompts:
            return
        else:
            line = await read_line("> " if typed else "")
            if line is None or (typed and not line.strip()):
                return
            prompt = line
        if not prompt.strip():
            continue
        if not typed:
            term.say(f"> {prompt}")

        def show(text: str) -> None:
            term.console.print(text, end="", markup=False, highlight=False)

        reply = await client.generate(model, prompt, max_tokens=96, on_chunk=show)
        term.console.print()
        term.event("generation", prompt=prompt, **reply)
