// Typed wrappers for the cortex/* methods over any JSON-RPC transport: vscode-languageclient's
// LanguageClient in the editor, a vscode-jsonrpc MessageConnection in the tests.
// This module must not import `vscode`.

import type {
  Generation, JobEntry, ModelEntry, ModelInfo, Preset, Proposal, StartedJob, SystemInfo,
  TrainingProgress, ValidationReport, WorkDoneProgress, WrittenDataset,
} from "./types";
import { TERMINAL_STATES } from "./types";

export interface Disposable { dispose(): void }

/** The two things the API needs from a connection; adapters wrap the real clients. */
export interface RpcTransport {
  sendRequest(method: string, params: unknown): Promise<unknown>;
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

type ProgressListener = (event: TrainingProgress) => void;

export interface GenerateOptions { maxTokens?: number; temperature?: number; adapter?: string; onChunk?: (text: string) => void }

export class CortexApi {
  private readonly events = new Map<string, TrainingProgress[]>();
  private readonly listeners = new Set<ProgressListener>();
  private readonly subscriptions: Disposable[] = [];
  private chunkSink: ((text: string) => void) | undefined;

  constructor(readonly transport: RpcTransport) {
    // Subscribe at once: a job's first events (queued, running) arrive before the
    // startTraining reply, so they are kept per job and replayed to whoever follows it.
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

  async request<R>(method: string, params: object = {}): Promise<R> {
    try {
      return (await this.transport.sendRequest(method, params)) as R;
    } catch (error) {
      throw asRpcError(error);
    }
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
