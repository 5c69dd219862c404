// Typed wrappers for the cortex/* methods over any JSON-RPC transport: vscode-languageclient's
// LanguageClient in the editor, a vscode-jsonrpc MessageConnection in the tests.
// This module must not import `vscode`.

import type {
  ExportModelParams, ExportResult,
  AdapterComparison, AdapterList, CompareAdaptersParams, DatasetReport, DatasetReportFormat, Generation, JobEntry, ModelEntry,
  ModelInfo, Preset, Proposal, StartedJob, SystemInfo, TrainingPreview, TrainingPreviewParams, TrainingProgress, ValidationReport,
  WorkDoneProgress, WrittenDataset,
} from "./types";
import { TERMINAL_STATES } from "./types";

export interface Disposable { dispose(): void }

/**
 * A cancellation token as both `vscode.CancellationToken` and vscode-jsonrpc's
 * `CancellationToken` are shaped: pass either.
 */
export interface CancellationLike {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: (e: any) => any, thisArgs?: any, disposables?: Disposable[]): Disposable;
}

/** JSON-RPC's RequestCancelled code: what a request cancelled through its token rejects with. */
export const REQUEST_CANCELLED = -32800;

/** The two things the API needs from a connection; adapters wrap the real clients. */
export interface RpcTransport {
  /** `token`, when given, sends `$/cancelRequest` for this request once it is cancelled. */
  sendRequest(method: string, params: unknown, token?: CancellationLike): Promise<unknown>;
  onNotification(method: string, handler: (params: any) => void): Disposable;
  /** `$/progress` for one token (vscode-jsonrpc routes those past onNotification). */
  onProgress(token: string, handler: (value: any) => void): Disposable;
}

/** A JSON-RPC error reply, with cortex-rpc's stable `data.code` (`model-not-found`, ...). */
export class CortexRpcError extends Error {
  constructor(message: string, readonly code: number, readonly data?: { code?: string; field?: string; [k: string]: unknown }) {
    super(message);
    this.name = "CortexRpcError";
  }
}

/** Return a CortexRpcError for anything a transport may reject with (ResponseError or Error). */
export function asRpcError(error: unknown): CortexRpcError {
  if (error instanceof CortexRpcError) return error;
  const e = error as { message?: string; code?: number; data?: any };
  return new CortexRpcError(String(e?.message ?? error), typeof e?.code === "number" ? e.code : 0, e?.data);
}

/** True for the rejection of a request that was cancelled through its token. */
export function isCancelled(error: unknown): boolean {
  return (error as { code?: unknown })?.code === REQUEST_CANCELLED;
}

function cancelledError(method: string): CortexRpcError {
  return new CortexRpcError(`${method} cancelled`, REQUEST_CANCELLED, { code: "cancelled" });
}

type ProgressListener = (event: TrainingProgress) => void;

export interface GenerateOptions { maxTokens?: number; temperature?: number; adapter?: string; onChunk?: (text: string) => void }

export class CortexApi {
  private readonly events = new Map<string, TrainingProgress[]>();
  private readonly listeners = new Set<ProgressListener>();
  private readonly subscriptions: Disposable[] = [];
  private chunkSink: ((text: string) => void) | undefined;

  constructor(readonly transport: RpcTransport) {
    // Subscribe at once: a job's first events (queued, running) follow the startTraining
    // reply at once, often before its caller follows the job, so they are kept per job and
    // replayed to whoever follows it.
    this.subscriptions.push(transport.onNotification("cortex/trainingProgress", (event: TrainingProgress) => {
      const list = this.events.get(event.jobId) ?? [];
      list.push(event);
      if (list.length > 200) list.splice(0, list.length - 200);
      this.events.set(event.jobId, list);
      for (const listener of [...this.listeners]) listener(event);
    }));
    this.subscriptions.push(transport.onNotification("cortex/generateChunk", (chunk: { text: string }) => {
      this.chunkSink?.(chunk.text);
    }));
  }

  dispose(): void {
    for (const s of this.subscriptions) s.dispose();
    this.listeners.clear();
  }

  /**
   * Send a request. With a `token`, cancelling it sends `$/cancelRequest` and rejects at once
   * with a CortexRpcError of code REQUEST_CANCELLED (see isCancelled), without waiting for
   * the server, which may finish the work it had started before it notices.
   */
  async request<R>(method: string, params: object = {}, token?: CancellationLike): Promise<R> {
    if (!token) {
      try {
        return (await this.transport.sendRequest(method, params)) as R;
      } catch (error) {
        throw asRpcError(error);
      }
    }
    if (token.isCancellationRequested) throw cancelledError(method);
    return new Promise<R>((resolve, reject) => {
      let settled = false;
      let subscription: Disposable | undefined;
      const settle = (finish: () => void) => {
        if (settled) return;
        settled = true;
        subscription?.dispose();
        finish();
      };
      subscription = token.onCancellationRequested(() => settle(() => reject(cancelledError(method))));
      if (settled) subscription.dispose();
      this.transport.sendRequest(method, params, token).then(
        (result) => settle(() => resolve(result as R)),
        (error) => settle(() => reject(token.isCancellationRequested ? cancelledError(method) : asRpcError(error))),
      );
    });
  }

  systemInfo(): Promise<SystemInfo> { return this.request("cortex/systemInfo"); }
  async listModels(): Promise<ModelEntry[]> { return (await this.request<{ models: ModelEntry[] }>("cortex/listModels")).models; }
  inspectModel(path: string): Promise<ModelInfo> { return this.request("cortex/inspectModel", { path }); }

  proposeConfig(model: string, dataset?: string, preset?: Preset, overrides?: Record<string, unknown>): Promise<Proposal> {
    return this.request("cortex/proposeConfig", dropUndefined({ model, dataset, preset, overrides }));
  }

  validateDataset(source: { path: string } | { text: string; format: string }): Promise<ValidationReport> {
    return this.request("cortex/validateDataset", source);
  }
  analyzeDataset(path: string, model?: string): Promise<Record<string, unknown>> {
    return this.request("cortex/analyzeDataset", dropUndefined({ path, model }));
  }
  createDataset(path: string, examples: { prompt: string; response: string }[], overwrite = false): Promise<WrittenDataset> {
    return this.request("cortex/createDataset", { path, examples, overwrite });
  }
  sampleDataset(path: string, overwrite = false): Promise<WrittenDataset> {
    return this.request("cortex/sampleDataset", { path, overwrite });
  }

  startTraining(params: { model: string; dataset: string; outputName: string; preset?: Preset; config?: Record<string, unknown>; workDoneToken?: string }): Promise<StartedJob> {
    return this.request("cortex/startTraining", dropUndefined(params));
  }
  cancelTraining(jobId: string): Promise<Record<string, unknown>> { return this.request("cortex/cancelTraining", { jobId }); }
  resumeTraining(jobId: string, workDoneToken?: string): Promise<JobEntry> {
    return this.request("cortex/resumeTraining", dropUndefined({ jobId, workDoneToken }));
  }
  /** The fine-tuned models trained on `baseModel` (a path or a name from listModels). */
  async listAdapters(baseModel: string): Promise<ModelEntry[]> {
    return (await this.request<AdapterList>("cortex/listAdapters", { baseModel })).adapters;
  }
  /** Answer each prompt with the base and with every adapter; cancellable through `token`. */
  compareAdapters(params: CompareAdaptersParams, token?: CancellationLike): Promise<AdapterComparison> {
    return this.request("cortex/compareAdapters", dropUndefined({ ...params }), token);
  }
  /** Export a fine-tuned model for another tool (verified unless `verify` is false); cancellable. */
  exportModel(params: ExportModelParams, token?: CancellationLike): Promise<ExportResult> {
    return this.request("cortex/exportModel", dropUndefined({ ...params }), token);
  }
  /** The dataset quality report (score, fixes, and the report in `format`) for a file on disk. */
  datasetReport(path: string, model?: string, token?: CancellationLike, format: DatasetReportFormat = "html"): Promise<DatasetReport> {
    return this.request("cortex/datasetReport", dropUndefined({ path, model, format }), token);
  }

  /** Records rendered as the trainer sees them (template, loss mask, cut), for a file or an open document. */
  trainingPreview(params: TrainingPreviewParams, token?: CancellationLike): Promise<TrainingPreview> {
    return this.request("cortex/trainingPreview", dropUndefined({ ...params }), token);
  }

  async listJobs(): Promise<JobEntry[]> { return (await this.request<{ jobs: JobEntry[] }>("cortex/listJobs")).jobs; }

  /** Generate a reply; chunks stream to `onChunk`. One generation at a time per connection. */
  async generate(model: string, prompt: string, options: GenerateOptions = {}): Promise<Generation> {
    const { onChunk, ...rest } = options;
    this.chunkSink = onChunk;
    try {
      return await this.request("cortex/generate", dropUndefined({ model, prompt, ...rest }));
    } finally {
      this.chunkSink = undefined;
    }
  }

  /** Call `listener` for every trainingProgress notification, of any job. */
  onTrainingProgress(listener: ProgressListener): Disposable {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  }

  /** The last event seen for `jobId`, if any. */
  lastEvent(jobId: string): TrainingProgress | undefined {
    const list = this.events.get(jobId);
    return list?.[list.length - 1];
  }

  /** Resolve with the job's terminal event, calling `onEvent` for each event (earlier ones replayed). */
  followJob(jobId: string, onEvent: ProgressListener = () => undefined): Promise<TrainingProgress> {
    return new Promise((resolve) => {
      let done = false;
      const handle = (event: TrainingProgress) => {
        if (done || event.jobId !== jobId) return;
        onEvent(event);
        if (TERMINAL_STATES.includes(event.state)) {
          done = true;
          subscription.dispose();
          resolve(event);
        }
      };
      const subscription = this.onTrainingProgress(handle);
      for (const event of [...(this.events.get(jobId) ?? [])]) handle(event);
    });
  }
}

/** Listen for `$/progress` of one work-done token on a transport. */
export function onWorkDoneProgress(transport: RpcTransport, token: string, handler: (value: WorkDoneProgress) => void): Disposable {
  return transport.onProgress(token, handler);
}

function dropUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
