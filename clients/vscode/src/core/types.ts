// Wire shapes of the cortex-rpc methods this extension uses (see docs/protocol.md).
// Only the fields the clients read are typed; the server may send more.

export interface Position { line: number; character: number }
export interface Range { start: Position; end: Position }

/** An LSP Diagnostic as cortex-rpc sends it: `code` is a stable string such as `json-syntax`. */
export interface Diagnostic {
  range: Range;
  severity?: 1 | 2 | 3 | 4;
  code?: string;
  source?: string;
  message: string;
  data?: Record<string, unknown>;
}

export interface SystemInfo {
  backend: string;
  device: string;
  memory: { totalBytes: number; availableBytes: number };
  blas: { name: string; path?: string } | null;
  versions: Record<string, string>;
  cortexHome: string;
  warnings?: string[];
}

export interface ModelEntry {
  name: string;
  path: string;
  kind?: "base" | "fine-tuned";
  source?: string;
  category?: string | null;
  parameters?: number | null;
  sizeBytes?: number | null;
  quantizationBits?: number | null;
  fineTuned?: boolean;
  baseModel?: string;
  adapterBytes?: number;
  error?: string;
  /** false for a partial download or an architecture mlx_lm cannot train; `notTrainable` says why. */
  trainable?: boolean;
  notTrainable?: { code: string; message: string };
}

export interface ModelInfo extends ModelEntry {
  architecture?: string;
  parameterSource?: string;
  dtype?: string;
  numLayers?: number;
  contextLength?: number;
  recommendedQuantizationBits?: number | null;
}

export type Preset = "quick" | "balanced" | "quality" | "expert";

export interface TrainingConfig {
  fineTuneType: string;
  epochs: number;
  iterations: number;
  learningRate: number;
  loraRank: number;
  loraAlpha: number;
  loraDropout: number;
  numLayers: number;
  batchSize: number;
  gradAccumulationSteps: number;
  maxSeqLength: number;
  quantizationBits: number | null;
  gradCheckpoint: boolean;
  seed: number;
  [field: string]: unknown;
}

export interface Estimate { seconds: number; peakMemoryBytes?: number; tokens?: number; basis?: string }

export interface Proposal {
  preset: Preset;
  config: TrainingConfig;
  model: ModelInfo;
  dataset?: { examples: number; sizeClass?: string; taskType?: string; meanChars?: number };
  explanations: string[];
  estimate?: Estimate | null;
  fitsInMemory?: boolean;
}

export interface ValidationReport {
  ok: boolean;
  format: string;
  shape?: string | null;
  examples: number;
  diagnostics: Diagnostic[];
  total: number;
  truncated: boolean;
}

export interface WrittenDataset { path: string; examples: number; warnings: string[] }

export type JobState = "queued" | "running" | "cancelling" | "completed" | "failed" | "cancelled" | "interrupted";
export const TERMINAL_STATES: readonly JobState[] = ["completed", "failed", "cancelled", "interrupted"];

export interface TrainingProgress {
  jobId: string;
  state: JobState;
  event?: string;
  outputName?: string;
  iteration?: number;
  totalIterations?: number;
  epoch?: number;
  totalEpochs?: number;
  trainLoss?: number;
  valLoss?: number;
  learningRate?: number;
  tokensPerSecond?: number;
  etaSeconds?: number;
  peakMemoryBytes?: number;
  /** Preference training (DPO/ORPO): share of pairs whose chosen reward beats the rejected. */
  rewardAccuracy?: number | null;
  /** Preference training: mean chosen minus rejected reward. */
  margin?: number | null;
  chosenReward?: number | null;
  rejectedReward?: number | null;
  chosenLogps?: number | null;
  rejectedLogps?: number | null;
  message?: string;
  outputPath?: string;
  adapterBytes?: number;
  /** On `done`: held-out loss and perplexity, base vs fine-tuned. */
  evaluation?: { baseValLoss: number; valLoss: number; basePerplexity: number; perplexity: number } | null;
  /** On `done`: the SVG loss curve (train and validation) saved next to the model. */
  lossCurvePath?: string | null;
  [field: string]: unknown;
}

export interface StartedJob {
  jobId: string;
  state: JobState;
  outputPath: string;
  config: TrainingConfig;
  explanations?: string[];
  estimate?: Estimate | null;
}

export interface JobEntry {
  jobId: string;
  state: JobState;
  outputName: string;
  outputPath?: string;
  model?: string;
  iteration?: number;
  totalIterations?: number;
  trainLoss?: number;
  message?: string;
  resumable?: boolean;
  [field: string]: unknown;
}

export interface Generation { text: string; tokens: number; tokensPerSecond: number; finishReason?: string }

/** `$/progress` values (LSP work-done progress). */
export interface WorkDoneProgress { kind: "begin" | "report" | "end"; title?: string; message?: string; percentage?: number }

/** `cortex/listAdapters`: the fine-tuned models trained on one base. */
export interface AdapterList {
  baseModel: string;
  adapters: ModelEntry[];
  /** Fine-tunes of the same hub repo trained on other weights, with what differs. */
  otherWeights?: { name: string; path: string; trainedOn: string; differences: string[]; message: string }[];
}

/** `workDoneToken`: `$/progress` reports `3/6 generations` under it. */
export interface CompareAdaptersParams { baseModel: string; adapters: string[]; prompts: string[]; maxTokens?: number; workDoneToken?: string }
/** One model's answer in a comparison row: `model` is `base` or the adapter's folder name. */
export interface CompareOutput { model: string; text: string; tokens: number }
export interface CompareRow { prompt: string; outputs: CompareOutput[] }
/** `cortex/compareAdapters`: one row per prompt, the base's output first, then each adapter's. */
export interface AdapterComparison { baseModel: string; rows: CompareRow[] }

/** A suggested fix in `cortex/datasetReport`: `lines` are 1-based line numbers of the file. */
export interface DatasetFix { code: string; title: string; detail: string; count: number; lines: number[] }

/** `cortex/datasetReport {path, model?, format?}`: a quality score with the report rendered as
 * Markdown (`format: "markdown"`, the default) or a standalone HTML page (`format: "html"`). */
export type DatasetReportFormat = "markdown" | "html" | "json";
export interface DatasetReport {
  score: number;
  markdown?: string;
  html?: string;
  fixes: DatasetFix[];
  analysis?: Record<string, unknown>;
  nearDuplicateClusters?: unknown[];
  lengthHistograms?: unknown;
  diversity?: unknown;
  leaks?: unknown;
  overContext?: unknown;
  [field: string]: unknown;
}

/** `cortex/trainingPreview` config: how the trainer would mask and cut a record. */
export interface TrainingPreviewConfig { trainOn?: "all" | "last"; trainTemplateText?: boolean; maxSeqLength?: number }

/** `cortex/trainingPreview {model, dataset? | uri?, line?, limit?, config?}`: `line` is 0-based. */
export interface TrainingPreviewParams {
  model: string;
  dataset?: string;
  uri?: string;
  line?: number;
  limit?: number;
  config?: TrainingPreviewConfig;
}

/** A problem of one rendered record (`turn` is the 0-based turn it concerns, when one). */
export interface TrainingPreviewIssue { code: string; severity: "error" | "warning" | "info" | string; message: string; turn?: number }

/** A run of the rendered text: what the model sees, and whether the loss is taken on it. */
export interface TrainingSegment { text: string; trained: boolean }

/** One record as the trainer sees it: rendered with the model's template, masked, maybe cut. */
export interface TrainingPreviewRecord {
  line: number;
  tokens: number;
  trainedTokens: number;
  truncated: boolean;
  lostTrainedTokens: number;
  issues: TrainingPreviewIssue[];
  segments: TrainingSegment[];
}

export interface TrainingPreviewSummary {
  records: number;
  tokens: { min: number; median: number; p95: number; max: number };
  trainedTokens: { min: number; median: number; max: number; total: number };
  cut: number;
  lostTrainedTokens: number;
  untrained: number;
  errors: number;
}

export interface TrainingPreview {
  records: TrainingPreviewRecord[];
  summary: TrainingPreviewSummary;
  options: { trainOn: string; trainTemplateText: boolean; maxSeqLength: number; maskPrompt?: boolean };
}

/** `cortex/datasetSummary`: the status-bar line of an open dataset (`trainedTokens` with a model set). */
export interface DatasetSummaryNotification {
  uri: string;
  text: string;
  examples?: number;
  taskType?: string;
  errors?: number;
  warnings?: number;
  /** A total, or the `{min, median, max, total}` of a training summary. */
  trainedTokens?: number | { total?: number };
  /** The training summary (`cortex/trainingPreview`'s `summary` shape), when the server sends one. */
  training?: Partial<TrainingPreviewSummary> | null;
  [field: string]: unknown;
}

/** `cortex/exportModel` params and reply (docs/export.md). */
export type ExportTarget = "mlx" | "hf" | "gguf" | "ollama" | "lmstudio";
export interface ExportModelParams {
  model: string;
  target: ExportTarget;
  name?: string;
  quantization?: "f32" | "f16" | "q8_0" | "q4_k_m";
  verify?: boolean;
  lmstudioRoot?: string;
  workDoneToken?: string;
}
export interface ExportVerification {
  status: "passed" | "failed" | "skipped";
  tool: string;
  tokenAgreement?: number;
  maxLogitDiff?: number;
  reason?: string;
  parts?: Record<string, boolean>;
}
export interface ExportResult {
  model: string;
  target: ExportTarget;
  name: string;
  path: string;
  files: string[];
  sizeBytes: number;
  seconds: number;
  quantization?: string | null;
  verification?: ExportVerification | null;
  nextCommands: string[];
}
