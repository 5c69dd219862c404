// "Cortex: Preview training text": the cortex/trainingPreview request for the record under the
// cursor, and its rendering as a plain-text document with the trained ranges as offsets (the
// glue highlights them with a decoration). This module must not import `vscode`.

import type { CancellationLike, CortexApi } from "./api";
import type {
  DatasetSummaryNotification, TrainingPreview, TrainingPreviewConfig, TrainingPreviewIssue, TrainingPreviewParams,
  TrainingPreviewRecord,
} from "./types";

/** What to preview: an open document (`uri`, synced to the server) or a file (`dataset`). */
export interface PreviewTarget {
  model: string;
  /** 0-based line of the cursor. */
  line: number;
  uri?: string;
  dataset?: string;
  config?: TrainingPreviewConfig;
}

/** `{model, uri | dataset, line, limit: 1, config?}`: the one record at the cursor. */
export function trainingPreviewParams(target: PreviewTarget): TrainingPreviewParams {
  const params: TrainingPreviewParams = { model: target.model };
  if (target.uri !== undefined) params.uri = target.uri;
  else if (target.dataset !== undefined) params.dataset = target.dataset;
  params.line = target.line;
  params.limit = 1;
  if (target.config && Object.keys(target.config).length) params.config = target.config;
  return params;
}

/** The record at `line`: the one starting there, else the last one starting before it, else the first. */
export function recordAt(records: TrainingPreviewRecord[], line: number): TrainingPreviewRecord | undefined {
  const exact = records.find((r) => r.line === line);
  if (exact) return exact;
  const before = records.filter((r) => r.line <= line).sort((a, b) => b.line - a.line)[0];
  return before ?? records[0];
}

const count = (n: number) => n.toLocaleString("en-US");

/** `120 tokens, 48 trained, cut: no`, or `…, cut: yes (12 trained tokens lost)`. */
export function previewHeader(record: TrainingPreviewRecord): string {
  const lost = record.truncated && record.lostTrainedTokens ? ` (${count(record.lostTrainedTokens)} trained token${record.lostTrainedTokens === 1 ? "" : "s"} lost)` : "";
  return `${count(record.tokens)} tokens, ${count(record.trainedTokens)} trained, cut: ${record.truncated ? "yes" : "no"}${lost}`;
}

/** `warning [code] message (turn 2)` (turns shown 1-based). */
export function issueLine(issue: TrainingPreviewIssue): string {
  const turn = typeof issue.turn === "number" ? ` (turn ${issue.turn + 1})` : "";
  return `${issue.severity} [${issue.code}] ${issue.message}${turn}`;
}

/** A [start, end) range of the rendered document's text, in UTF-16 offsets. */
export interface OffsetRange { start: number; end: number }

export interface RenderedPreview {
  /** The whole document: header, where it comes from, the rendered record, the issues. */
  text: string;
  /** The ranges of `text` the loss is taken on. */
  trained: OffsetRange[];
  header: string;
  record: TrainingPreviewRecord;
}

export const TEXT_START = "──── rendered text (highlighted: trained) ────";
export const TEXT_END = "──── end of record ────";

/** Render one record of a cortex/trainingPreview result as a read-only document. */
export function renderPreview(record: TrainingPreviewRecord, options: { source?: string; model?: string; preview?: TrainingPreview } = {}): RenderedPreview {
  const header = previewHeader(record);
  const where = [
    options.source ? `${options.source}, line ${record.line + 1}` : `line ${record.line + 1}`,
    options.model ? `model ${options.model}` : undefined,
  ].filter(Boolean).join(" · ");
  const o = options.preview?.options;
  const lines = [header, where];
  if (o) lines.push(`trainOn: ${o.trainOn} · trainTemplateText: ${o.trainTemplateText ? "yes" : "no"} · maxSeqLength: ${o.maxSeqLength}`);
  lines.push("", TEXT_START, "");
  let text = lines.join("\n"); // ends with the marker's newline
  const trained: OffsetRange[] = [];
  for (const segment of record.segments) {
    if (!segment.text) continue;
    const start = text.length;
    text += segment.text;
    if (!segment.trained) continue;
    const last = trained[trained.length - 1];
    if (last && last.end === start) last.end = text.length;
    else trained.push({ start, end: text.length });
  }
  if (!record.segments.length) text += "(nothing rendered)";
  if (!text.endsWith("\n")) text += "\n";
  const tail = ["", ""];
  if (record.truncated) {
    const max = options.preview?.options?.maxSeqLength;
    tail.push(`Cut${max ? ` at maxSeqLength ${count(max)}` : ""}: the text stops where the trainer cuts it; the rest is never seen.`, "");
  }
  if (record.issues.length) {
    tail.push(`Issues (${record.issues.length}):`);
    for (const issue of record.issues) tail.push(`  ${issueLine(issue)}`);
  } else {
    tail.push(record.trainedTokens ? "No issues." : "No issues reported, but nothing in this record is trained.");
  }
  text += `${TEXT_END}${tail.join("\n")}\n`;
  return { text, trained, header, record };
}

/** Ask the server for the record at the cursor and render it; undefined when it returned none. */
export async function previewTraining(api: CortexApi, target: PreviewTarget, options: { source?: string; modelName?: string; token?: CancellationLike } = {}): Promise<RenderedPreview | undefined> {
  const result = await api.trainingPreview(trainingPreviewParams(target), options.token);
  const record = recordAt(result.records ?? [], target.line);
  if (!record) return undefined;
  return renderPreview(record, { source: options.source, model: options.modelName ?? target.model, preview: result });
}

/** The total trained tokens of a datasetSummary payload, when the server counted them. */
export function summaryTrainedTokens(summary: DatasetSummaryNotification): number | undefined {
  const value = summary.trainedTokens;
  if (typeof value === "number") return value;
  if (value && typeof value === "object" && typeof value.total === "number") return value.total;
  const nested = summary.training?.trainedTokens?.total;
  return typeof nested === "number" ? nested : undefined;
}

/** The status-bar line: `Dataset: 24 examples · chat · 0 problems · 1,234 trained tokens`. */
export function datasetSummaryText(summary: DatasetSummaryNotification): string {
  const total = summaryTrainedTokens(summary);
  const text = summary.text ?? "";
  if (total === undefined || /trained/i.test(text)) return `Dataset: ${text}`;
  return `Dataset: ${text} · ${count(total)} trained token${total === 1 ? "" : "s"}`;
}
