// The VS Code glue: starts cortex-rpc with vscode-languageclient, and maps the wizard's
// abstract UI onto QuickPick / InputBox / notifications. Everything else is in ./core.

import * as path from "path";
import * as vscode from "vscode";
import { LanguageClient, State, WorkDoneProgress, type LanguageClientOptions, type ServerOptions } from "vscode-languageclient/node";
import { CortexApi, onWorkDoneProgress, type RpcTransport } from "./core/api";
import { modelDescription, statusBarText, summarizeValidation, systemInfoLines, humanBytes } from "./core/format";
import type { JobEntry, TrainingProgress } from "./core/types";
import { FineTuneWizard, type PickItem, type WizardUI } from "./core/wizard";

let client: LanguageClient | undefined;
let api: CortexApi | undefined;
let output: vscode.OutputChannel;
let serverLog: vscode.LogOutputChannel;
let statusItem: vscode.StatusBarItem;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("Cortex");
  serverLog = vscode.window.createOutputChannel("Cortex Server", { log: true });
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 50);
  statusItem.command = "cortex.cancelTraining";
  context.subscriptions.push(output, serverLog, statusItem);

  const command = (id: string, run: () => Promise<unknown>) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, async () => {
      try {
        await run();
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

  context.subscriptions.push(vscode.workspace.onDidChangeConfiguration(async (event) => {
    if (event.affectsConfiguration("cortex")) {
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
  const clientOptions: LanguageClientOptions = {
    documentSelector: [
      { language: "jsonl" },
      ...datasetFiles.map((pattern) => ({ scheme: "file", pattern })),
      ...datasetFiles.map((pattern) => ({ scheme: "untitled", pattern })),
    ],
    initializationOptions: dropEmpty({
      modelDirs: settings.get<string[]>("modelDirs") ?? [],
      cortexHome: settings.get<string | null>("home") || undefined,
    }),
    outputChannel: serverLog,
  };
  client = new LanguageClient("cortex", "Cortex", serverOptions, clientOptions);
  await client.start();
  const lc = client;
  const transport: RpcTransport = {
    sendRequest: (method, params) => lc.sendRequest(method, params),
    onNotification: (method, handler) => lc.onNotification(method, handler),
    onProgress: (token, handler) => lc.onProgress(WorkDoneProgress.type, token, handler),
  };
  api = new CortexApi(transport);
  api.onTrainingProgress(updateStatusBar);
  lc.onNotification("cortex/datasetSummary", (summary: { uri: string; text: string }) => {
    const active = vscode.window.activeTextEditor?.document.uri.toString();
    if (active === summary.uri) vscode.window.setStatusBarMessage(`Dataset: ${summary.text}`, 5000);
  });
  return api;
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
    defaultDataset: active && !active.isUntitled && /\.(jsonl|json|csv|txt)$/i.test(active.fileName) ? active.fileName : undefined,
    datasetDir: home ? path.join(home, "datasets") : undefined,
  });
  output.appendLine("== Cortex: Fine-Tune Model");
  const result = await wizard.run().finally(() => progress.dispose());
  if (result.model) await context.globalState.update("cortex.lastModel", result.model.path);
  output.appendLine(`== wizard ended: ${result.state}`);
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
