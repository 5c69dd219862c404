// The guided fine-tuning wizard (the guide's steps 1-4, summary, training, result, "try it"),
// driven through an abstract WizardUI so the same state machine runs behind VS Code's
// QuickPick/InputBox and behind a scripted UI in the tests. This module must not import `vscode`.

import * as os from "os";
import * as path from "path";
import { CortexApi, CortexRpcError } from "./api";
import {
  detectedLines, humanBytes, humanParams, modelDescription, progressLine, progressPercent,
  proposalGist, resultLines, summarizeValidation, trainingSummary, capitalize,
} from "./format";
import { nameProblem, suggestModelName } from "./names";
import type { ModelInfo, Preset, Proposal, TrainingProgress, ValidationReport } from "./types";

export interface PickItem<T> { label: string; description?: string; detail?: string; value: T }

/**
 * What the wizard needs from an editor. `step` names the question ("model", "dataOption",
 * "preset", "expert.learningRate", ...) so scripted UIs can answer by name. A picker or input
 * answers `undefined` when the user dismissed it (Escape): the wizard then stops.
 */
export interface WizardUI {
  pick<T>(step: string, title: string, items: PickItem<T>[], options?: { placeholder?: string; activeIndex?: number }): Promise<T | undefined>;
  input(step: string, title: string, options?: { prompt?: string; value?: string; placeholder?: string; validate?: (value: string) => string | undefined }): Promise<string | undefined>;
  /** A yes/no question; `detail` is a multi-line block (the summary). */
  confirm(step: string, message: string, options?: { detail?: string; yes?: string; modal?: boolean }): Promise<boolean>;
  message(kind: "info" | "warning" | "error", text: string): void;
  /** A line for the log (VS Code: the output channel). */
  log(line: string): void;
  /** Run `work` while showing progress; `onCancel` registers what the cancel button does. */
  progress<T>(title: string, work: (report: (message: string, percentage?: number) => void, onCancel: (handler: () => void) => void) => Promise<T>): Promise<T>;
}

export interface WizardOptions {
  /** Offered first in step 1 ("the currently loaded model"). */
  lastModel?: string;
  /** Offered as the default path in "Use existing file" (e.g. the active editor's file). */
  defaultDataset?: string;
  /** Where "Create" and "Sample" save datasets by default (`$CORTEX_HOME/datasets`). */
  datasetDir?: string;
  /** Token for `$/progress` reports of the job (the server then reports through it too). */
  workDoneToken?: string;
  /** Tokens per reply in "Try it". */
  maxTokens?: number;
}

export type WizardState = "aborted" | "not-started" | "completed" | "failed" | "cancelled" | "interrupted";

export interface WizardResult {
  state: WizardState;
  model?: ModelInfo;
  datasetPath?: string;
  preset?: Preset;
  overrides?: Record<string, unknown>;
  outputName?: string;
  jobId?: string;
  final?: TrainingProgress;
  replies?: string[];
}

class Aborted extends Error {}

export const MIN_RECOMMENDED_EXAMPLES = 5;

export const PRESETS: { value: Preset; label: string; description: string }[] = [
  { value: "quick", label: "Quick", description: "fast experimentation" },
  { value: "balanced", label: "Balanced", description: "recommended for most cases" },
  { value: "quality", label: "Quality", description: "best results, longer training" },
  { value: "expert", label: "Expert", description: "full customization" },
];

/** The fields Expert asks for, in order, with their labels (the terminal wizard's list). */
export const EXPERT_FIELDS: [string, string][] = [
  ["epochs", "Epochs"],
  ["learningRate", "Learning rate"],
  ["loraRank", "LoRA rank"],
  ["loraAlpha", "LoRA alpha"],
  ["loraDropout", "LoRA dropout"],
  ["batchSize", "Batch size"],
  ["gradAccumulationSteps", "Gradient accumulation steps"],
  ["numLayers", "Layers with adapters"],
  ["maxSeqLength", "Max sequence length"],
  ["quantizationBits", "Quantization bits (none, 4 or 8)"],
  ["fineTuneType", "Fine-tune type (lora, dora, full)"],
];

/** Turn an Expert answer into a JSON value: numbers, booleans, null ("none"), or text. */
export function parseValue(text: string): unknown {
  const lowered = text.trim().toLowerCase();
  if (lowered === "" || lowered === "none" || lowered === "null") return null;
  try {
    return JSON.parse(lowered);
  } catch {
    return text.trim();
  }
}

function expandHome(p: string): string {
  return p.startsWith("~") ? path.join(os.homedir(), p.slice(1)) : p;
}

export class FineTuneWizard {
  private model!: ModelInfo;
  private datasetPath = "";
  private report!: ValidationReport;
  private preset: Preset = "balanced";
  private overrides: Record<string, unknown> = {};
  private proposal!: Proposal;
  private outputName = "";

  constructor(private readonly api: CortexApi, private readonly ui: WizardUI, private readonly options: WizardOptions = {}) {}

  /** Run every step; resolve with how it ended (never rejects for a dismissed question). */
  async run(): Promise<WizardResult> {
    try {
      await this.selectModel();
      await this.prepareData();
      await this.configure();
      await this.nameModel();
      if (!(await this.summary())) {
        this.ui.message("info", "Fine-tuning not started.");
        return this.result("not-started");
      }
      return await this.train();
    } catch (error) {
      if (error instanceof Aborted) {
        this.ui.log("Wizard cancelled.");
        return this.result("aborted");
      }
      throw error;
    }
  }

  private result(state: WizardState, extra: Partial<WizardResult> = {}): WizardResult {
    return {
      state, model: this.model, datasetPath: this.datasetPath || undefined, preset: this.preset,
      overrides: this.overrides, outputName: this.outputName || undefined, ...extra,
    };
  }

  private need<T>(value: T | undefined): T {
    if (value === undefined) throw new Aborted();
    return value;
  }

  // -- Step 1 ---------------------------------------------------------------------------------

  async selectModel(): Promise<ModelInfo> {
    this.ui.log("[Step 1: Select Base Model]");
    for (;;) {
      const models = (await this.api.listModels()).filter((m) => m.kind !== "fine-tuned" && !m.fineTuned && !m.error);
      const items: PickItem<string | null>[] = [];
      const last = this.options.lastModel;
      if (last) items.push({ label: `$(history) ${path.basename(last)}`, description: "currently loaded model", detail: last, value: last });
      for (const m of models) {
        if (m.path !== last) items.push({ label: m.name, description: modelDescription(m), detail: m.path, value: m.path });
      }
      items.push({ label: "$(folder) Enter a path…", description: "a local MLX / Hugging Face model directory", value: null });
      let choice = this.need(await this.ui.pick("model", "Step 1/4: Select base model", items,
        { placeholder: models.length ? "Models found on this machine" : "No models found: enter a path" }));
      if (choice === null) {
        choice = expandHome(this.need(await this.ui.input("modelPath", "Path to a model directory", { prompt: "A folder with config.json and *.safetensors" })));
      }
      try {
        this.model = await this.api.inspectModel(choice);
        break;
      } catch (error) {
        this.ui.message("error", (error as Error).message);
      }
    }
    this.ui.log(`✓ Model: ${this.model.name} (${capitalize(this.model.category)}, ${humanParams(this.model.parameters)} params, ${humanBytes(this.model.sizeBytes)})`);
    return this.model;
  }

  // -- Step 2 ---------------------------------------------------------------------------------

  async prepareData(): Promise<string> {
    this.ui.log("[Step 2: Prepare Training Data]");
    for (;;) {
      const option = this.need(await this.ui.pick("dataOption", "Step 2/4: Training data", [
        { label: "Use existing file", description: "JSONL, JSON, CSV or TXT", value: "file" as const },
        { label: "Create dataset interactively", description: "prompt/response pairs until 'done'", value: "create" as const },
        { label: "Use sample dataset", description: "the bundled example", value: "sample" as const },
      ]));
      let file: string;
      try {
        if (option === "file") {
          file = path.resolve(expandHome(this.need(await this.ui.input("datasetPath", "Path to the dataset",
            { value: this.options.defaultDataset, placeholder: "~/my_data.jsonl" }))));
        } else if (option === "create") {
          file = await this.createDataset();
        } else {
          const written = await this.api.sampleDataset(path.join(this.datasetDir(), "sample_dataset.jsonl"), true);
          this.ui.log(`✓ Sample dataset written to ${written.path}`);
          file = written.path;
        }
      } catch (error) {
        if (error instanceof CortexRpcError) {
          this.ui.message("error", error.message);
          continue;
        }
        throw error;
      }
      if (await this.validate(file)) return file;
    }
  }

  private datasetDir(): string {
    return this.options.datasetDir ?? path.join(process.env.CORTEX_HOME || path.join(os.homedir(), ".cortex"), "datasets");
  }

  private async createDataset(): Promise<string> {
    const target = path.resolve(expandHome(this.need(await this.ui.input("createPath", "Save the new dataset as",
      { value: path.join(this.datasetDir(), "my-dataset.jsonl") }))));
    const examples: { prompt: string; response: string }[] = [];
    for (;;) {
      const prompt = this.need(await this.ui.input("examplePrompt", `Example ${examples.length + 1}: prompt`,
        { prompt: "Type 'done' to finish", placeholder: "What is Python?" }));
      if (prompt.trim().toLowerCase() === "done") {
        if (!examples.length) {
          this.ui.message("warning", "Add at least one example.");
          continue;
        }
        if (examples.length < MIN_RECOMMENDED_EXAMPLES) {
          const more = await this.ui.confirm("addMore",
            `Only ${examples.length} example${examples.length === 1 ? "" : "s"}; at least ${MIN_RECOMMENDED_EXAMPLES} are recommended. Add more?`,
            { yes: "Add more" });
          if (more) continue;
        }
        break;
      }
      if (!prompt.trim()) continue;
      const response = this.need(await this.ui.input("exampleResponse", `Example ${examples.length + 1}: response`,
        { validate: (v) => (v.trim() ? undefined : "A response cannot be empty") }));
      if (!response.trim()) continue;
      examples.push({ prompt, response });
    }
    let created;
    try {
      created = await this.api.createDataset(target, examples, false);
    } catch (error) {
      if (!(error instanceof CortexRpcError) || !/exist/i.test(error.message + (error.data?.code ?? ""))) throw error;
      if (!(await this.ui.confirm("overwrite", `${target} exists. Overwrite it?`, { yes: "Overwrite", modal: true }))) throw new Aborted();
      created = await this.api.createDataset(target, examples, true);
    }
    for (const warning of created.warnings ?? []) this.ui.log(`⚠ ${warning}`);
    this.ui.log(`✓ Saved ${created.examples} examples to ${created.path}`);
    return created.path;
  }

  private async validate(file: string): Promise<boolean> {
    let report: ValidationReport;
    try {
      report = await this.api.validateDataset({ path: file });
    } catch (error) {
      this.ui.message("error", (error as Error).message);
      return false;
    }
    const summary = summarizeValidation(path.basename(file), report);
    for (const line of summary.lines) this.ui.log(`  ${line}`);
    if (!summary.ok) {
      this.ui.log(`✗ ${summary.headline}`);
      this.ui.message("error", `${summary.headline} (details in the log)`);
      return false;
    }
    this.ui.log(`✓ ${summary.headline}`);
    this.ui.message("info", `✓ ${summary.headline}`);
    this.datasetPath = file;
    this.report = report;
    return true;
  }

  // -- Step 3 ---------------------------------------------------------------------------------

  async configure(): Promise<Proposal> {
    this.ui.log("[Step 3: Configure Training]");
    const proposals = new Map<Preset, Proposal>();
    await Promise.all(PRESETS.filter((p) => p.value !== "expert").map(async (p) => {
      proposals.set(p.value, await this.api.proposeConfig(this.model.path, this.datasetPath, p.value));
    }));
    const detected = proposals.get("balanced")!;
    this.ui.log("Smart Configuration detected:");
    for (const line of detectedLines(detected)) this.ui.log(`  ${line}`);
    const items = PRESETS.map((p) => ({
      label: p.value === "balanced" ? `$(star) ${p.label}` : p.label,
      description: p.description,
      detail: proposals.has(p.value) ? proposalGist(proposals.get(p.value)!) : "asks for each setting, proposed value as default",
      value: p.value,
    }));
    this.preset = this.need(await this.ui.pick("preset", "Step 3/4: Training preset", items,
      { placeholder: detectedLines(detected).join(" · "), activeIndex: 1 }));
    if (this.preset === "expert") {
      this.proposal = await this.askExpert();
    } else {
      this.proposal = proposals.get(this.preset)!;
    }
    this.ui.log("⚡ Smart configuration applied:");
    for (const note of this.proposal.explanations) this.ui.log(`   ${note}`);
    if (this.proposal.fitsInMemory === false) this.ui.message("warning", "This configuration may not fit in memory.");
    return this.proposal;
  }

  private async askExpert(): Promise<Proposal> {
    const proposed = (await this.api.proposeConfig(this.model.path, this.datasetPath, "expert")).config;
    let fields = EXPERT_FIELDS;
    for (;;) {
      for (const [key, label] of fields) {
        const current = key in this.overrides ? this.overrides[key] : proposed[key];
        const answer = this.need(await this.ui.input(`expert.${key}`, `Expert: ${label}`,
          { value: current === null || current === undefined ? "none" : String(current), prompt: `Proposed: ${proposed[key] ?? "none"} (Enter keeps it)` }));
        const value = parseValue(answer);
        if (JSON.stringify(value) !== JSON.stringify(proposed[key] ?? null)) this.overrides[key] = value;
        else delete this.overrides[key];
      }
      try {
        return await this.api.proposeConfig(this.model.path, this.datasetPath, "expert",
          Object.keys(this.overrides).length ? this.overrides : undefined);
      } catch (error) {
        if (!(error instanceof CortexRpcError)) throw error;
        this.ui.message("error", error.message);
        // Ask again only for the field the server named, else for all of them.
        const field = String(error.data?.field ?? "").replace(/^(overrides|config)\./, "");
        const named = EXPERT_FIELDS.filter(([key]) => key === field);
        if (field && !named.length) delete this.overrides[field];
        fields = named.length ? named : EXPERT_FIELDS;
      }
    }
  }

  // -- Step 4 ---------------------------------------------------------------------------------

  async nameModel(): Promise<string> {
    this.ui.log("[Step 4: Name Your Model]");
    const taken = (await this.api.listModels()).map((m) => m.name);
    const suggestion = suggestModelName(this.model.name, taken);
    this.outputName = this.need(await this.ui.input("name", "Step 4/4: Name the fine-tuned model",
      { value: suggestion, prompt: "Saved under $CORTEX_HOME/mlx_models/NAME", validate: (v) => nameProblem(v, taken) }));
    const problem = nameProblem(this.outputName, taken);
    if (problem) {
      this.ui.message("error", problem);
      throw new Aborted();
    }
    return this.outputName;
  }

  // -- Summary, training, result ----------------------------------------------------------------

  async summary(): Promise<boolean> {
    const lines = trainingSummary({
      baseModel: this.model.name, outputName: this.outputName, datasetPath: this.datasetPath,
      examples: this.report.examples, preset: this.preset, proposal: this.proposal,
    });
    this.ui.log("[Training Summary]");
    for (const line of lines) this.ui.log(`  ${line}`);
    return this.ui.confirm("confirm", "Start fine-tuning?", { detail: lines.join("\n"), yes: "Start", modal: true });
  }

  async train(): Promise<WizardResult> {
    const overrides = Object.keys(this.overrides).length ? this.overrides : undefined;
    const title = `Fine-tuning ${this.outputName}`;
    this.ui.log("⚡ Starting fine-tuning...");
    const final = await this.ui.progress(title, async (report, onCancel) => {
      const started = await this.api.startTraining({
        model: this.model.path, dataset: this.datasetPath, outputName: this.outputName,
        preset: this.preset, config: overrides, workDoneToken: this.options.workDoneToken,
      });
      this.ui.log(`Job ${started.jobId}: saving to ${started.outputPath}`);
      onCancel(() => {
        this.ui.log("Cancelling (the last checkpoint is kept)...");
        this.api.cancelTraining(started.jobId).catch((error) => this.ui.message("error", String(error.message)));
      });
      let lastPercent = 0;
      return this.api.followJob(started.jobId, (event) => {
        if (event.event === "warning" && event.message) this.ui.log(`⚠ ${event.message}`);
        if (event.event === "checkpoint") return;
        const line = progressLine(event);
        const percent = progressPercent(event);
        this.ui.log(`  ${percent !== undefined ? `${String(percent).padStart(3)}% ` : ""}${line}`);
        // VS Code's report() takes increments; the UI adapter converts, we pass the absolute value.
        report(line, percent);
        lastPercent = percent ?? lastPercent;
      });
    });
    const state = final.state as WizardState;
    const extra = { jobId: final.jobId, final };
    if (state !== "completed") {
      const hint = state === "cancelled" || state === "interrupted" ? ` Resume it with: cortex-finetune resume ${final.jobId}` : "";
      this.ui.log(`✗ Training ${state}: ${final.message ?? ""}${hint}`);
      this.ui.message(state === "cancelled" ? "warning" : "error", `Training ${state}: ${final.message ?? ""}${hint}`);
      return this.result(state, extra);
    }
    for (const line of resultLines(final, this.model.name, this.model.path)) this.ui.log(line);
    const replies = await this.tryIt(final);
    return this.result("completed", { ...extra, replies });
  }

  /** "Try it": chat with the new model until an empty prompt. */
  private async tryIt(final: TrainingProgress): Promise<string[]> {
    const replies: string[] = [];
    const name = final.outputName ?? this.outputName;
    const wanted = await this.ui.confirm("tryIt",
      `✓ Fine-tuning completed! Saved to ${final.outputPath} (adapter ${humanBytes(final.adapterBytes)}).`,
      { yes: "Try it" });
    if (!wanted) return replies;
    for (;;) {
      const prompt = await this.ui.input("chatPrompt", `Ask ${name}`, { prompt: "An empty line finishes" });
      if (!prompt || !prompt.trim()) break;
      this.ui.log(`> ${prompt}`);
      let streamed = "";
      const reply = await this.api.generate(name, prompt, { maxTokens: this.options.maxTokens ?? 96, onChunk: (t) => { streamed += t; } });
      const text = reply.text || streamed;
      this.ui.log(text);
      this.ui.message("info", `${name}: ${text || "(empty reply)"}`);
      replies.push(text);
    }
    return replies;
  }
}
