// The VS Code glue: starts cortex-rpc with vscode-languageclient, and maps the wizard's
// abstract UI onto QuickPick / InputBox / notifications. Everything else is in ./core.

import * as path from "path";
import * as vscode from "vscode";
import { LanguageClient, State, WorkDoneProgress, type LanguageClientOptions, type ServerOptions } from "vscode-languageclient/node";
import { asRpcError, CortexApi, isCancelled, onWorkDoneProgress, type CancellationLike, type RpcTransport } from "./core/api";
import {
  baseModelChoices, datasetPrompts, joinPrompts, MAX_COMPARE_ADAPTERS, promptsProblem, splitPrompts,
} from "./core/compare";
import {
  baseName, compareAdaptersHtml, compareAdaptersMarkdown, datasetFixLines, datasetReportTitle, evaluationLines, humanBytes, isDatasetFile,
  lossCurveHtml, modelDescription, statusBarText, summarizeValidation, systemInfoLines, withContentSecurityPolicy,
} from "./core/format";
import { datasetSummaryText, previewTraining, type RenderedPreview } from "./core/preview";
import type { AdapterComparison, DatasetReport, ExportModelParams, ExportResult, ExportTarget, DatasetSummaryNotification, JobEntry, TrainingProgress } from "./core/types";
import { FineTuneWizard, type PickItem, type WizardUI } from "./core/wizard";

let client: LanguageClient | undefined;
let api: CortexApi | undefined;
let output: vscode.OutputChannel;
let serverLog: vscode.LogOutputChannel;
let statusItem: vscode.StatusBarItem;
/** Open webview panels by what they show (a dataset file, a base model), reused on refresh. */
const panels = new Map<string, vscode.WebviewPanel>();
/** The documents the server checks live (the language client's selector). */
let documentSelector: ({ language: string } | { scheme: string; pattern: string })[] = [];

/** Training previews: read-only virtual documents, the trained ranges highlighted. */
const PREVIEW_SCHEME = "cortex-preview";
const previews = new Map<string, RenderedPreview>();
const previewChanged = new vscode.EventEmitter<vscode.Uri>();
let trainedDecoration: vscode.TextEditorDecorationType;
/** Settings read when the server starts: changing one asks for a restart. */
const RESTART_SETTINGS = ["serverPath", "home", "datasetFiles"];
/** Settings the running server takes with workspace/didChangeConfiguration. */
const LIVE_SETTINGS = ["model", "modelDirs"];

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("Cortex");
  serverLog = vscode.window.createOutputChannel("Cortex Server", { log: true });
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 50);
  statusItem.command = "cortex.cancelTraining";
  context.subscriptions.push(output, serverLog, statusItem);

  const command = (id: string, run: (...args: any[]) => Promise<unknown>) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, async (...args: any[]) => {
      try {
        await run(...args);
      } catch (error) {
        output.appendLine(`✗ ${(error as Error).stack ?? error}`);
        void vscode.window.showErrorMessage(`Cortex: ${(error as Error).message}`);
      }
    }));
  command("cortex.fineTune", () => fineTune(context));
  command("cortex.validateDataset", validateDataset);
  command("cortex.showModels", showModels);
  command("cortex.cancelTraining", cancelTraining);
  command("cortex.gpuStatus", gpuStatus);
  command("cortex.compareAdapters", () => compareAdapters(context));
  command("cortex.datasetReport", (uri?: vscode.Uri) => datasetReport(context, uri));
  command("cortex.previewTraining", () => previewTrainingText(context));
  command("cortex.exportModel", exportModel);

  trainedDecoration = vscode.window.createTextEditorDecorationType({
    backgroundColor: new vscode.ThemeColor("diffEditor.insertedTextBackground"),
    overviewRulerColor: new vscode.ThemeColor("editorOverviewRuler.addedForeground"),
    overviewRulerLane: vscode.OverviewRulerLane.Left,
  });
  context.subscriptions.push(
    trainedDecoration, previewChanged,
    vscode.workspace.registerTextDocumentContentProvider(PREVIEW_SCHEME, {
      onDidChange: previewChanged.event,
      provideTextDocumentContent: (uri) => previews.get(uri.toString())?.text ?? "This preview is gone: run Cortex: Preview Training Text again.\n",
    }),
    vscode.window.onDidChangeVisibleTextEditors((editors) => editors.forEach(decoratePreview)),
    vscode.workspace.onDidChangeTextDocument((event) => {
      if (event.document.uri.scheme !== PREVIEW_SCHEME) return;
      for (const editor of vscode.window.visibleTextEditors) if (editor.document === event.document) decoratePreview(editor);
    }),
  );

  context.subscriptions.push(vscode.workspace.onDidChangeConfiguration(async (event) => {
    // The model and its folders only change what the server computes: tell it, no restart.
    if (LIVE_SETTINGS.some((key) => event.affectsConfiguration(`cortex.${key}`))) await sendLiveSettings();
    if (RESTART_SETTINGS.some((key) => event.affectsConfiguration(`cortex.${key}`))) {
      const answer = await vscode.window.showInformationMessage("Cortex settings changed.", "Restart server");
      if (answer) await restart();
    }
  }));
  await ensureClient();
}

export async function deactivate(): Promise<void> {
  api?.dispose();
  await client?.stop();
}

async function restart(): Promise<void> {
  api?.dispose();
  await client?.stop();
  client = undefined;
  api = undefined;
  await ensureClient();
}

/** Start the language client once; return the protocol API over it. */
async function ensureClient(): Promise<CortexApi> {
  if (api && client?.state === State.Running) return api;
  const settings = vscode.workspace.getConfiguration("cortex");
  const serverOptions: ServerOptions = {
    command: settings.get<string>("serverPath") || "cortex-rpc",
    args: [],
    options: { env: { ...process.env } },
  };
  const datasetFiles = settings.get<string[]>("datasetFiles") ?? ["**/*.jsonl"];
  documentSelector = [
    { language: "jsonl" },
    ...datasetFiles.map((pattern) => ({ scheme: "file", pattern })),
    ...datasetFiles.map((pattern) => ({ scheme: "untitled", pattern })),
  ];
  const clientOptions: LanguageClientOptions = {
    documentSelector,
    initializationOptions: dropEmpty({
      modelDirs: settings.get<string[]>("modelDirs") ?? [],
      cortexHome: settings.get<string | null>("home") || undefined,
      model: configuredModel(),
    }),
    outputChannel: serverLog,
  };
  client = new LanguageClient("cortex", "Cortex", serverOptions, clientOptions);
  await client.start();
  const lc = client;
  const transport: RpcTransport = {
    sendRequest: (method, params, token) => (token
      ? lc.sendRequest(method, params, token as vscode.CancellationToken)
      : lc.sendRequest(method, params)),
    onNotification: (method, handler) => lc.onNotification(method, handler),
    onProgress: (token, handler) => lc.onProgress(WorkDoneProgress.type, token, handler),
  };
  api = new CortexApi(transport);
  api.onTrainingProgress(updateStatusBar);
  lc.onNotification("cortex/datasetSummary", (summary: DatasetSummaryNotification) => {
    const active = vscode.window.activeTextEditor?.document.uri.toString();
    if (active === summary.uri) vscode.window.setStatusBarMessage(datasetSummaryText(summary), 5000);
  });
  return api;
}

/** The `cortex.model` setting (the model the datasets will train), or undefined when unset. */
function configuredModel(): string | undefined {
  return vscode.workspace.getConfiguration("cortex").get<string | null>("model")?.trim() || undefined;
}

/** Send the live settings to a running server (model `null` turns the model-based checks off). */
async function sendLiveSettings(): Promise<void> {
  if (client?.state !== State.Running) return;
  const modelDirs = vscode.workspace.getConfiguration("cortex").get<string[]>("modelDirs") ?? [];
  await client.sendNotification("workspace/didChangeConfiguration", { settings: { cortex: { model: configuredModel() ?? null, modelDirs } } });
}

function dropEmpty(options: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined && !(Array.isArray(v) && v.length === 0)));
}

function updateStatusBar(event: TrainingProgress): void {
  statusItem.text = `$(${event.state === "running" ? "sync~spin" : event.state === "completed" ? "check" : "circle-slash"}) ${statusBarText(event)}`;
  statusItem.tooltip = event.outputName ? `Fine-tuning ${event.outputName} (click to cancel)` : undefined;
  statusItem.show();
  if (!["queued", "running"].includes(event.state)) setTimeout(() => statusItem.hide(), 10000);
}

/** The wizard's UI on VS Code: one QuickPick or InputBox per step, modal confirmations. */
class VsCodeWizardUI implements WizardUI {
  async pick<T>(_step: string, title: string, items: PickItem<T>[], options: { placeholder?: string; activeIndex?: number } = {}): Promise<T | undefined> {
    const quickPick = vscode.window.createQuickPick<vscode.QuickPickItem & { value: T }>();
    quickPick.title = title;
    quickPick.placeholder = options.placeholder;
    quickPick.items = items;
    quickPick.matchOnDescription = true;
    quickPick.ignoreFocusOut = true;
    if (options.activeIndex !== undefined && quickPick.items[options.activeIndex]) quickPick.activeItems = [quickPick.items[options.activeIndex]];
    return new Promise<T | undefined>((resolve) => {
      quickPick.onDidAccept(() => { resolve(quickPick.selectedItems[0]?.value); quickPick.hide(); });
      quickPick.onDidHide(() => { resolve(undefined); quickPick.dispose(); });
      quickPick.show();
    });
  }

  input(_step: string, title: string, options: { prompt?: string; value?: string; placeholder?: string; validate?: (value: string) => string | undefined } = {}): Promise<string | undefined> {
    return Promise.resolve(vscode.window.showInputBox({
      title, prompt: options.prompt, value: options.value, placeHolder: options.placeholder,
      ignoreFocusOut: true, validateInput: options.validate,
    }));
  }

  async confirm(_step: string, message: string, options: { detail?: string; yes?: string; modal?: boolean } = {}): Promise<boolean> {
    const yes = options.yes ?? "Yes";
    const answer = await vscode.window.showInformationMessage(message, { modal: options.modal ?? false, detail: options.detail }, yes);
    return answer === yes;
  }

  message(kind: "info" | "warning" | "error", text: string): void {
    const show = kind === "error" ? vscode.window.showErrorMessage : kind === "warning" ? vscode.window.showWarningMessage : vscode.window.showInformationMessage;
    void show(text);
  }

  log(line: string): void {
    output.appendLine(line);
  }

  progress<T>(title: string, work: (report: (message: string, percentage?: number) => void, onCancel: (handler: () => void) => void) => Promise<T>): Promise<T> {
    output.show(true);
    return Promise.resolve(vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (progress, token) => {
      let shown = 0;
      const report = (message: string, percentage?: number) => {
        // withProgress takes increments; the wizard reports absolute percentages.
        const increment = percentage !== undefined ? Math.max(0, percentage - shown) : undefined;
        if (percentage !== undefined) shown = Math.max(shown, percentage);
        progress.report({ message, increment });
      };
      return work(report, (handler) => token.onCancellationRequested(handler));
    }));
  }
}

async function fineTune(context: vscode.ExtensionContext): Promise<void> {
  const cortex = await ensureClient();
  const active = vscode.window.activeTextEditor?.document;
  const settings = vscode.workspace.getConfiguration("cortex");
  const home = settings.get<string | null>("home");
  // Our own work-done token: without one the server asks the client to create one and
  // vscode-languageclient would show a second progress notification next to ours.
  const workDoneToken = `cortex-vscode-${Date.now()}`;
  const progress = onWorkDoneProgress(cortex.transport, workDoneToken, (value) => {
    if (value.message) statusItem.tooltip = `${value.title ?? "Fine-tuning"}: ${value.message}`;
  });
  const wizard = new FineTuneWizard(cortex, new VsCodeWizardUI(), {
    workDoneToken,
    lastModel: context.globalState.get<string>("cortex.lastModel"),
    defaultDataset: active && !active.isUntitled && isDatasetFile(active.fileName) ? active.fileName : undefined,
    datasetDir: home ? path.join(home, "datasets") : undefined,
  });
  output.appendLine("== Cortex: Fine-Tune Model");
  const result = await wizard.run().finally(() => progress.dispose());
  if (result.model) await context.globalState.update("cortex.lastModel", result.model.path);
  output.appendLine(`== wizard ended: ${result.state}`);
  const curve = result.final?.lossCurvePath;
  if (result.state === "completed" && curve) {
    const summary = evaluationLines(result.final!)[0] ?? "Training finished.";
    if (await vscode.window.showInformationMessage(summary, "Show Loss Curve")) await showLossCurve(curve, result.outputName ?? "");
  }
}

async function showLossCurve(file: string, name: string): Promise<void> {
  const svg = new TextDecoder().decode(await vscode.workspace.fs.readFile(vscode.Uri.file(file)));
  showHtml(`cortex.lossCurve:${file}`, `Loss curve — ${name}`, lossCurveHtml(`Loss curve — ${name}`, svg));
}

async function validateDataset(): Promise<void> {
  const cortex = await ensureClient();
  let document = vscode.window.activeTextEditor?.document;
  if (!document) {
    const picked = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { Datasets: ["jsonl", "json", "csv", "txt"] } });
    if (!picked?.length) return;
    document = await vscode.workspace.openTextDocument(picked[0]);
    await vscode.window.showTextDocument(document);
  }
  const name = path.basename(document.fileName);
  const format = (path.extname(document.fileName).slice(1) || "jsonl").toLowerCase();
  // Validate what is on screen, saved or not.
  const report = await cortex.validateDataset({ text: document.getText(), format: ["jsonl", "json", "csv", "txt"].includes(format) ? format : "jsonl" });
  const summary = summarizeValidation(name, report);
  output.appendLine(`== Validate ${document.fileName}`);
  for (const line of summary.lines) output.appendLine(`  ${line}`);
  output.appendLine(summary.ok ? `✓ ${summary.headline}` : `✗ ${summary.headline}`);
  if (summary.ok) {
    void vscode.window.showInformationMessage(`✓ ${summary.headline}`);
  } else {
    const answer = await vscode.window.showErrorMessage(summary.headline, "Show Problems", "Show Log");
    if (answer === "Show Problems") await vscode.commands.executeCommand("workbench.actions.view.problems");
    if (answer === "Show Log") output.show();
  }
}

async function showModels(): Promise<void> {
  const cortex = await ensureClient();
  const models = await cortex.listModels();
  if (!models.length) {
    void vscode.window.showInformationMessage("No models found. Add folders in the cortex.modelDirs setting.");
    return;
  }
  const picked = await vscode.window.showQuickPick(models.map((m) => ({ label: m.name, description: modelDescription(m), detail: m.path, model: m })),
    { title: "Cortex models", matchOnDescription: true });
  if (!picked) return;
  const info = await cortex.inspectModel(picked.model.path);
  output.appendLine(`== ${info.name}`);
  output.appendLine(JSON.stringify(info, null, 2));
  output.show(true);
}

const EXPORT_TARGETS: { label: string; description: string; value: ExportTarget }[] = [
  { label: "Ollama", description: "GGUF + Modelfile (chat template and stop tokens translated)", value: "ollama" },
  { label: "GGUF", description: "for llama.cpp (llama-cli, llama-server)", value: "gguf" },
  { label: "LM Studio", description: "fused MLX model in ~/.lmstudio/models/cortex", value: "lmstudio" },
  { label: "Hugging Face", description: "dequantized safetensors, tokenizer, chat template", value: "hf" },
  { label: "MLX", description: "standalone fused MLX model", value: "mlx" },
];

async function exportModel(): Promise<void> {
  const cortex = await ensureClient();
  const fineTuned = (await cortex.listModels()).filter((m) => m.kind === "fine-tuned");
  if (!fineTuned.length) {
    void vscode.window.showInformationMessage("No fine-tuned models yet: run Cortex: Fine-Tune Model first.");
    return;
  }
  const model = await vscode.window.showQuickPick(fineTuned.map((m) => ({ label: m.name, description: modelDescription(m), detail: m.path, model: m })),
    { title: "Export (1/2): fine-tuned model", ignoreFocusOut: true });
  if (!model) return;
  const target = await vscode.window.showQuickPick(EXPORT_TARGETS, { title: `Export ${model.label} (2/2): for`, ignoreFocusOut: true });
  if (!target) return;
  let quantization: ExportModelParams["quantization"];
  if (target.value === "gguf" || target.value === "ollama") {
    const picked = await vscode.window.showQuickPick(
      [{ label: "f16", description: "full quality" }, { label: "q8_0", description: "half the size" }, { label: "q4_k_m", description: "a quarter, some quality lost" }],
      { title: "GGUF quantization", ignoreFocusOut: true });
    if (!picked) return;
    quantization = picked.label as ExportModelParams["quantization"];
  }
  const result: ExportResult | undefined = await cancellable(`Exporting ${model.label} for ${target.label}`, "fuse, convert, verify", async (token, progress) => {
    const workDoneToken = `cortex-export-${Date.now()}`;
    const reports = onWorkDoneProgress(cortex.transport, workDoneToken, (value) => {
      if (value.kind === "report") progress.report({ message: value.message });
    });
    try {
      return await cortex.exportModel({ model: model.label, target: target.value, quantization, workDoneToken }, token);
    } finally {
      reports.dispose();
    }
  });
  if (!result) return;
  const verification = result.verification;
  const verified = verification?.status === "passed"
    ? `verified with ${verification.tool}: ${Math.round((verification.tokenAgreement ?? 0) * 100)}% of tokens agree`
    : verification ? `not verified: ${verification.reason ?? verification.status}` : "not verified";
  output.appendLine(`== Export ${result.name} (${result.target}) → ${result.path}`);
  output.appendLine(`  ${humanBytes(result.sizeBytes)} · ${verified}`);
  for (const line of result.nextCommands) output.appendLine(`  ${line}`);
  const answer = await vscode.window.showInformationMessage(`Cortex: exported ${result.name} (${verified}).`, "Copy Next Command", "Details");
  if (answer === "Copy Next Command" && result.nextCommands[0]) await vscode.env.clipboard.writeText(result.nextCommands[0]);
  if (answer === "Details") output.show();
}

async function cancelTraining(): Promise<void> {
  const cortex = await ensureClient();
  const jobs = (await cortex.listJobs()).filter((j: JobEntry) => j.state === "running" || j.state === "queued");
  if (!jobs.length) {
    void vscode.window.showInformationMessage("No training job is running.");
    return;
  }
  const picked = jobs.length === 1 ? { job: jobs[0] } : await vscode.window.showQuickPick(
    jobs.map((job) => ({ label: job.outputName, description: `${job.state} · step ${job.iteration ?? 0}/${job.totalIterations ?? "?"}`, detail: job.jobId, job })),
    { title: "Cancel which job?" });
  if (!picked) return;
  const sure = await vscode.window.showWarningMessage(`Cancel training ${picked.job.outputName}? The last checkpoint is kept; resume with cortex-finetune resume ${picked.job.jobId}.`, { modal: true }, "Cancel Training");
  if (sure !== "Cancel Training") return;
  await cortex.cancelTraining(picked.job.jobId);
  output.appendLine(`Cancelling job ${picked.job.jobId}`);
}

async function gpuStatus(): Promise<void> {
  const cortex = await ensureClient();
  const info = await cortex.systemInfo();
  const lines = systemInfoLines(info);
  output.appendLine("== GPU status");
  for (const line of lines) output.appendLine(`  ${line}`);
  const answer = await vscode.window.showInformationMessage(`Cortex: ${info.backend} · ${humanBytes(info.memory.availableBytes)} available · BLAS ${info.blas?.name ?? "none"}`, "Details");
  if (answer) output.show();
}

/** Whether the running server has `method` (its `capabilities.experimental.cortex.methods`). */
function serverHas(method: string): boolean {
  const methods: unknown = client?.initializeResult?.capabilities.experimental?.cortex?.methods;
  return !Array.isArray(methods) || methods.includes(method);
}

/** Show `html` in a webview without scripts (the HTML carries its own CSP), one panel per `key`. */
function showHtml(key: string, title: string, html: string): void {
  let panel = panels.get(key);
  if (!panel) {
    panel = vscode.window.createWebviewPanel(key.split(":")[0], title, vscode.ViewColumn.Active,
      { enableScripts: false, enableFindWidget: true, localResourceRoots: [] });
    const created = panel;
    panel.onDidDispose(() => { if (panels.get(key) === created) panels.delete(key); });
    panels.set(key, panel);
  }
  panel.title = title;
  panel.webview.html = html;
  panel.reveal();
}

/** Run `work` in a cancellable progress notification; undefined (and a note) when cancelled. */
async function cancellable<T>(
  title: string, message: string,
  work: (token: CancellationLike, progress: vscode.Progress<{ message?: string; increment?: number }>) => Promise<T>,
): Promise<T | undefined> {
  try {
    return await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (progress, token) => {
      progress.report({ message });
      return work(token, progress);
    });
  } catch (error) {
    if (!isCancelled(error)) throw error;
    output.appendLine(`${title}: cancelled`);
    void vscode.window.showInformationMessage(`${title}: cancelled.`);
    return undefined;
  }
}

async function compareAdapters(context: vscode.ExtensionContext): Promise<void> {
  const cortex = await ensureClient();
  // 1. The base model: the wizard's last one first, then bases that have adapters.
  const bases = baseModelChoices(await cortex.listModels(), context.globalState.get<string>("cortex.lastModel"));
  const baseItems: (vscode.QuickPickItem & { value: string | null })[] = bases.map((b) => ({
    label: b.last ? `$(history) ${b.name}` : b.name,
    description: [b.last ? "last used" : undefined, b.adapters ? `${b.adapters} fine-tuned model${b.adapters === 1 ? "" : "s"}` : "no fine-tuned models listed"]
      .filter(Boolean).join(" · "),
    detail: b.path,
    value: b.path,
  }));
  baseItems.push({ label: "$(folder) Enter a path…", description: "a local base model directory", value: null });
  const pickedBase = await vscode.window.showQuickPick(baseItems, {
    title: "Compare adapters (1/3): base model", placeHolder: "The base the adapters were trained on", matchOnDescription: true, ignoreFocusOut: true,
  });
  if (!pickedBase) return;
  const basePath = pickedBase.value ?? await vscode.window.showInputBox({
    title: "Compare adapters: path to the base model", prompt: "A folder with config.json and *.safetensors", ignoreFocusOut: true,
  });
  if (!basePath) return;

  // 2. Its adapters (all of them picked to start with).
  const adapters = await cortex.listAdapters(basePath);
  if (!adapters.length) {
    const answer = await vscode.window.showInformationMessage(`No fine-tuned models of ${baseName(basePath)} yet.`, "Fine-Tune Model…");
    if (answer) await vscode.commands.executeCommand("cortex.fineTune");
    return;
  }
  const adapterItems = adapters.map((a, index) => ({
    label: a.name, description: `adapter ${humanBytes(a.adapterBytes)}`, detail: a.path, picked: index < MAX_COMPARE_ADAPTERS, adapter: a,
  }));
  const chosen = await vscode.window.showQuickPick(adapterItems, {
    title: `Compare adapters (2/3): fine-tuned models of ${baseName(basePath)}`, placeHolder: `Up to ${MAX_COMPARE_ADAPTERS}; the base is always shown`,
    canPickMany: true, matchOnDescription: true, ignoreFocusOut: true,
  });
  if (!chosen?.length) return;
  if (chosen.length > MAX_COMPARE_ADAPTERS) throw new Error(`Pick at most ${MAX_COMPARE_ADAPTERS} adapters (${chosen.length} picked).`);

  // 3. The prompts: typed (";;" between them), or the first ones of the dataset in the editor.
  const prompts = await askComparePrompts(context);
  if (!prompts) return;

  const maxTokens = vscode.workspace.getConfiguration("cortex").get<number>("compareMaxTokens") ?? 64;
  const count = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const result: AdapterComparison | undefined = await cancellable(
    `Comparing ${count(chosen.length, "adapter")} of ${baseName(basePath)}`,
    `${count(prompts.length, "prompt")} × ${chosen.length + 1} models, up to ${maxTokens} tokens each`,
    async (token, progress) => {
      // The server reports each finished generation under our work-done token.
      const workDoneToken = `cortex-compare-${Date.now()}`;
      let shown = 0;
      const reports = onWorkDoneProgress(cortex.transport, workDoneToken, (value) => {
        if (value.kind !== "report") return;
        const increment = value.percentage !== undefined ? value.percentage - shown : undefined;
        if (value.percentage !== undefined) shown = value.percentage;
        progress.report({ message: value.message, increment });
      });
      try {
        return await cortex.compareAdapters({ baseModel: basePath, adapters: chosen.map((c) => c.adapter.path), prompts, maxTokens, workDoneToken }, token);
      } finally {
        reports.dispose();
      }
    },
  );
  if (!result) return;
  await context.globalState.update("cortex.comparePrompts", prompts);
  output.appendLine(`== Compare adapters of ${result.baseModel}`);
  output.appendLine(compareAdaptersMarkdown(result, { maxTokens }));
  showHtml(`cortex.compareAdapters:${result.baseModel}`, `Adapters — ${baseName(result.baseModel)}`, compareAdaptersHtml(result, { maxTokens }));
}

async function askComparePrompts(context: vscode.ExtensionContext): Promise<string[] | undefined> {
  const document = vscode.window.activeTextEditor?.document;
  const fromDataset = document && isDatasetFile(document.fileName) ? datasetPrompts(document.getText(), 3) : [];
  if (fromDataset.length) {
    const choice = await vscode.window.showQuickPick([
      { label: "$(edit) Type prompts…", description: "separated by ;;", value: "type" as const },
      {
        label: `$(file) The first ${fromDataset.length === 1 ? "prompt" : `${fromDataset.length} prompts`} of ${baseName(document!.fileName)}`,
        detail: fromDataset.map((p) => p.replace(/\s+/g, " ").slice(0, 60)).join(" · "), value: "dataset" as const,
      },
    ], { title: "Compare adapters (3/3): prompts", ignoreFocusOut: true });
    if (!choice) return undefined;
    if (choice.value === "dataset") return fromDataset;
  }
  const previous = context.globalState.get<string[]>("cortex.comparePrompts") ?? [];
  const text = await vscode.window.showInputBox({
    title: "Compare adapters (3/3): prompts",
    prompt: "One prompt, or several separated by ;; (each is answered by the base and by every adapter)",
    placeHolder: "What is Git? ;; Explain LoRA in one sentence",
    value: joinPrompts(previous),
    ignoreFocusOut: true,
    validateInput: (value) => promptsProblem(splitPrompts(value)),
  });
  return text === undefined ? undefined : splitPrompts(text);
}

async function datasetReport(context: vscode.ExtensionContext, uri?: vscode.Uri): Promise<void> {
  const cortex = await ensureClient();
  if (!serverHas("cortex/datasetReport")) throw new Error("This cortex-rpc has no cortex/datasetReport; update the server.");
  // The explorer's file, else the active editor's dataset, else ask.
  let file = uri instanceof vscode.Uri && uri.scheme === "file" ? uri.fsPath : undefined;
  const active = vscode.window.activeTextEditor?.document;
  if (!file && active && active.uri.scheme === "file" && isDatasetFile(active.fileName)) file = active.fileName;
  if (!file) {
    const picked = await vscode.window.showOpenDialog({ canSelectMany: false, title: "Dataset to report on", filters: { Datasets: ["jsonl", "json", "csv", "txt"] } });
    if (!picked?.length) return;
    file = picked[0].fsPath;
  }
  // The server reads the file on disk: offer to save unsaved edits first.
  const open = vscode.workspace.textDocuments.find((d) => d.uri.scheme === "file" && d.fileName === file);
  if (open?.isDirty) {
    const answer = await vscode.window.showWarningMessage(`${baseName(file)} has unsaved changes; the report reads the file on disk.`,
      "Save and Continue", "Use Saved File");
    if (!answer) return;
    if (answer === "Save and Continue" && !(await open.save())) return;
  }
  // Token lengths with the tokenizer of the wizard's last model, when it is still there.
  const model = context.globalState.get<string>("cortex.lastModel");
  const target = file;
  const report: DatasetReport | undefined = await cancellable(`Dataset report: ${baseName(target)}`, "analyzing", async (token) => {
    try {
      return await cortex.datasetReport(target, model, token);
    } catch (error) {
      const code = String(asRpcError(error).data?.code ?? "");
      if (!model || isCancelled(error) || !/model/.test(code)) throw error;
      output.appendLine(`Dataset report: ${model} not usable (${code}); reporting without a tokenizer`);
      return cortex.datasetReport(target, undefined, token);
    }
  });
  if (!report) return;
  const title = datasetReportTitle(target, report.score);
  output.appendLine(`== ${title}${model ? ` (tokens counted with ${baseName(model)})` : ""}`);
  for (const line of datasetFixLines(report.fixes ?? [])) output.appendLine(`  ${line}`);
  showHtml(`cortex.datasetReport:${target}`, title, withContentSecurityPolicy(report.html ?? ""));
}

/** Highlight the trained ranges of a training preview shown in `editor`. */
function decoratePreview(editor: vscode.TextEditor): void {
  const document = editor.document;
  if (document.uri.scheme !== PREVIEW_SCHEME) return;
  const rendered = previews.get(document.uri.toString());
  if (!rendered) return;
  editor.setDecorations(trainedDecoration, rendered.trained.map((range) => ({
    range: new vscode.Range(document.positionAt(range.start), document.positionAt(range.end)),
    hoverMessage: "Trained: the loss is taken on this text",
  })));
}

/** The model to preview with: `cortex.model`, else one picked from the server's list (or typed). */
async function previewModel(cortex: CortexApi, context: vscode.ExtensionContext): Promise<string | undefined> {
  const configured = configuredModel();
  if (configured) return configured;
  const last = context.globalState.get<string>("cortex.previewModel") ?? context.globalState.get<string>("cortex.lastModel");
  const items: (vscode.QuickPickItem & { value: string | null })[] = baseModelChoices(await cortex.listModels(), last).map((b) => ({
    label: b.last ? `$(history) ${b.name}` : b.name, description: b.last ? "last used" : undefined, detail: b.path, value: b.path,
  }));
  items.push({ label: "$(folder) Enter a path…", description: "a local model directory", value: null });
  const picked = await vscode.window.showQuickPick(items, {
    title: "Preview training text: model", placeHolder: "The model this dataset will train (set cortex.model to skip this)",
    matchOnDescription: true, ignoreFocusOut: true,
  });
  if (!picked) return undefined;
  const model = picked.value ?? (await vscode.window.showInputBox({
    title: "Preview training text: path to the model", prompt: "A folder with config.json and the tokenizer", ignoreFocusOut: true,
  }))?.trim();
  if (!model) return undefined;
  await context.globalState.update("cortex.previewModel", model);
  void vscode.window.showInformationMessage(`Use ${baseName(model)} for live training diagnostics and hover too?`, "Set cortex.model").then((answer) => {
    // The workspace's settings when a folder is open, else the user's.
    const target = vscode.workspace.workspaceFolders?.length ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
    if (answer) void vscode.workspace.getConfiguration("cortex").update("model", model, target);
  });
  return model;
}

/** Cortex: Preview Training Text: the record at the cursor as the trainer sees it. */
async function previewTrainingText(context: vscode.ExtensionContext): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const document = editor?.document;
  if (!editor || !document || document.uri.scheme === PREVIEW_SCHEME || !(document.languageId === "jsonl" || isDatasetFile(document.fileName))) {
    throw new Error("Open a dataset file (.jsonl, .json, .csv, .txt) and put the cursor on a record.");
  }
  const cortex = await ensureClient();
  if (!serverHas("cortex/trainingPreview")) throw new Error("This cortex-rpc has no cortex/trainingPreview; update the server.");
  const model = await previewModel(cortex, context);
  if (!model) return;
  const line = editor.selection.active.line;
  // An open dataset the server checks live is previewed as edited; any other file as saved.
  const synced = vscode.languages.match(documentSelector, document) > 0;
  if (!synced && document.uri.scheme !== "file") throw new Error(`${baseName(document.fileName)} is not a dataset the server checks (see cortex.datasetFiles).`);
  if (!synced && document.isDirty) void vscode.window.showWarningMessage(`${baseName(document.fileName)}: the preview reads the saved file.`);
  const source = baseName(document.fileName);
  const target = synced ? { model, line, uri: document.uri.toString() } : { model, line, dataset: document.uri.fsPath };
  const rendered = await cancellable(`Training preview: ${source}`, `line ${line + 1} with ${baseName(model)}`,
    async (token) => (await previewTraining(cortex, target, { source, modelName: baseName(model), token })) ?? null);
  if (rendered === undefined) return; // cancelled
  if (rendered === null) {
    void vscode.window.showInformationMessage(`No record at line ${line + 1} of ${source}.`);
    return;
  }
  output.appendLine(`== Training preview: ${source} line ${rendered.record.line + 1} (${model})`);
  output.appendLine(`  ${rendered.header}`);
  for (const issue of rendered.record.issues) output.appendLine(`  ${issue.severity} [${issue.code}] ${issue.message}`);
  const uri = vscode.Uri.from({
    scheme: PREVIEW_SCHEME, path: `/${source} — line ${rendered.record.line + 1} (training text)`, query: document.uri.toString(),
  });
  const known = previews.has(uri.toString());
  previews.set(uri.toString(), rendered);
  if (known) previewChanged.fire(uri);
  const shown = await vscode.window.showTextDocument(await vscode.workspace.openTextDocument(uri), {
    viewColumn: vscode.ViewColumn.Beside, preview: true,
  });
  decoratePreview(shown);
}
