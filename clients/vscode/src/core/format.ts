// Human-readable text for models, datasets, configs and progress: the same numbers the
// terminal wizard shows (cortex_rpc/units.py). This module must not import `vscode`.

import type {
  AdapterComparison, DatasetFix, Diagnostic, ModelEntry, Proposal, SystemInfo, TrainingProgress, ValidationReport,
} from "./types";

/** `7.2B` / `3.5M` / `140K`. */
export function humanParams(count: number | null | undefined): string {
  if (!count) return "?";
  for (const [unit, scale] of [["T", 1e12], ["B", 1e9], ["M", 1e6]] as const) {
    if (count >= scale) return `${(count / scale).toFixed(1)}${unit}`;
  }
  return `${Math.round(count / 1e3)}K`;
}

/** `2.3 MB` (decimal units, as the guide shows). */
export function humanBytes(size: number | null | undefined): string {
  if (size === null || size === undefined) return "?";
  if (Math.abs(size) < 1000) return `${Math.trunc(size)} B`;
  let value = size;
  let unit = "KB";
  for (unit of ["KB", "MB", "GB", "TB"]) {
    value /= 1000;
    if (Math.abs(value) < 1000 || unit === "TB") break;
  }
  return `${value.toFixed(1)} ${unit}`;
}

/** `1h 02m`, `3m 05s` or `42s`. */
export function humanDuration(seconds: number): string {
  const total = Math.max(0, Math.round(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  const pad = (n: number) => String(n).padStart(2, "0");
  if (hours) return `${hours}h ${pad(minutes)}m`;
  if (minutes) return `${minutes}m ${pad(secs)}s`;
  return `${secs}s`;
}

/** Like Python's `{:g}`: 0.0001 -> `1e-4`, 3 -> `3`, 0.5 -> `0.5`. */
export function shortNumber(value: number): string {
  if (value !== 0 && Math.abs(value) < 1e-3) {
    const [mantissa, exponent] = value.toExponential().split("e");
    return `${Number(mantissa).toPrecision(6).replace(/\.?0+$/, "")}e${Number(exponent)}`;
  }
  return String(Number(value.toPrecision(6)));
}

export function capitalize(text: string | null | undefined): string {
  if (!text) return "?";
  return text[0].toUpperCase() + text.slice(1);
}

/** One line per model for pickers: name, category, parameters, size. */
export function modelDescription(model: ModelEntry): string {
  if (model.error) return `unreadable: ${model.error}`;
  const parts = [capitalize(model.category ?? undefined), `${humanParams(model.parameters)} params`, humanBytes(model.sizeBytes)];
  if (model.kind === "fine-tuned" || model.fineTuned) parts.push("fine-tuned");
  return parts.join(" · ");
}

/** `Epoch 2/4`, 1-based and clamped, from a progress event (epochs may be fractional). */
export function epochText(event: TrainingProgress): string | undefined {
  if (!event.totalEpochs) return undefined;
  const total = Math.max(1, Math.ceil(event.totalEpochs - 1e-9));
  const current = Math.min(total, Math.max(1, Math.ceil(event.epoch ?? 0)));
  return `Epoch ${current}/${total}`;
}

/** The live line: `Epoch 1/2 | step 5/18 | Loss 6.8356 | Val 7.1057 | 9534 tok/s | ETA 3s`. */
export function progressLine(event: TrainingProgress): string {
  if (event.state !== "running") return event.message ?? capitalize(event.state);
  const parts: string[] = [];
  const epoch = epochText(event);
  if (epoch) parts.push(epoch);
  if (event.totalIterations) parts.push(`step ${event.iteration ?? 0}/${event.totalIterations}`);
  if (event.trainLoss !== undefined && event.trainLoss !== null) parts.push(`Loss ${event.trainLoss.toFixed(4)}`);
  if (event.valLoss !== undefined && event.valLoss !== null) parts.push(`Val ${event.valLoss.toFixed(4)}`);
  parts.push(...preferenceParts(event));
  if (event.tokensPerSecond) parts.push(`${Math.round(event.tokensPerSecond)} tok/s`);
  if (event.etaSeconds !== undefined && event.etaSeconds !== null) parts.push(`ETA ${humanDuration(event.etaSeconds)}`);
  if (event.peakMemoryBytes) parts.push(`mem ${humanBytes(event.peakMemoryBytes)}`);
  return parts.join(" | ") || event.message || "Training";
}

/** Preference training (DPO/ORPO): `Acc 75%`, `Margin 0.123` when the event carries them. */
export function preferenceParts(event: TrainingProgress): string[] {
  const parts: string[] = [];
  if (typeof event.rewardAccuracy === "number") parts.push(`Acc ${Math.round(100 * event.rewardAccuracy)}%`);
  if (typeof event.margin === "number") parts.push(`Margin ${event.margin.toFixed(3)}`);
  return parts;
}

/** Percent done (0-100) or undefined when the total is unknown. */
export function progressPercent(event: TrainingProgress): number | undefined {
  if (!event.totalIterations) return undefined;
  return Math.min(100, Math.floor((100 * (event.iteration ?? 0)) / event.totalIterations));
}

/** The status bar text for a job: `Cortex: Epoch 1/2 · loss 6.836`. */
export function statusBarText(event: TrainingProgress): string {
  const name = event.outputName ? `${event.outputName} ` : "";
  if (event.state === "queued") return `Cortex: ${name}queued`;
  if (event.state !== "running") return `Cortex: ${name}${event.state}`;
  const parts = [
    epochText(event),
    event.trainLoss !== undefined ? `loss ${event.trainLoss.toFixed(3)}` : undefined,
    typeof event.rewardAccuracy === "number" ? `acc ${Math.round(100 * event.rewardAccuracy)}%` : undefined,
  ];
  return `Cortex: ${parts.filter(Boolean).join(" · ") || "starting"}`;
}

const SEVERITY = ["", "error", "warning", "info", "hint"];

/** `data.jsonl:3:1: error [json-syntax] Invalid JSON ...` (1-based line and column). */
export function diagnosticLine(file: string, diagnostic: Diagnostic): string {
  const { line, character } = diagnostic.range.start;
  const severity = SEVERITY[diagnostic.severity ?? 1] ?? "error";
  return `${file}:${line + 1}:${character + 1}: ${severity} [${diagnostic.code ?? "?"}] ${diagnostic.message}`;
}

export interface ValidationSummary { ok: boolean; errors: number; warnings: number; headline: string; lines: string[] }

/** The wizard's verdict: `Dataset validated: N examples`, or the problems with line numbers. */
export function summarizeValidation(file: string, report: ValidationReport, limit = 20): ValidationSummary {
  const errors = report.diagnostics.filter((d) => (d.severity ?? 1) === 1).length;
  const warnings = report.diagnostics.filter((d) => d.severity === 2).length;
  const ok = report.ok && errors === 0;
  const lines = report.diagnostics.slice(0, limit).map((d) => diagnosticLine(file, d));
  const total = report.total ?? report.diagnostics.length;
  if (total > limit) lines.push(`... and ${total - limit} more`);
  const headline = ok
    ? `Dataset validated: ${report.examples} examples${warnings ? ` (${warnings} warning${warnings > 1 ? "s" : ""})` : ""}`
    : `Dataset has ${errors} error${errors === 1 ? "" : "s"}: ${report.diagnostics.find((d) => (d.severity ?? 1) === 1)?.message ?? "see the log"}`;
  return { ok, errors, warnings, headline, lines };
}

/** The guide's "Smart Configuration detected" lines. */
export function detectedLines(proposal: Proposal): string[] {
  const model = proposal.model;
  const data = proposal.dataset;
  return [
    `Model: ${capitalize(model.category)} (${humanParams(model.parameters)} params, ${humanBytes(model.sizeBytes)})`,
    `Dataset: ${capitalize(data?.sizeClass)} (${data?.examples ?? "?"} examples)`,
    `Task type: ${capitalize(data?.taskType)}`,
  ];
}

/** One-line gist of a proposal for a preset picker: `3 epochs · lr 1e-3 · rank 8 · ~5s`. */
export function proposalGist(proposal: Proposal): string {
  const c = proposal.config;
  const parts = [`${shortNumber(c.epochs)} epochs`, `lr ${shortNumber(c.learningRate)}`, `rank ${c.loraRank}`];
  if (c.quantizationBits) parts.push(`${c.quantizationBits}-bit`);
  if (proposal.estimate?.seconds !== undefined) parts.push(`~${humanDuration(proposal.estimate.seconds)}`);
  return parts.join(" · ");
}

export interface SummaryInput { baseModel: string; outputName: string; datasetPath: string; examples: number; preset: string; proposal: Proposal }

/** The guide's Training Summary block, as lines. */
export function trainingSummary(input: SummaryInput): string[] {
  const { proposal } = input;
  const c = proposal.config;
  const file = input.datasetPath.split(/[\\/]/).pop();
  let batch = `${c.batchSize}`;
  if ((c.gradAccumulationSteps ?? 1) > 1) batch += ` (x${c.gradAccumulationSteps} acc.)`;
  const rows: [string, string][] = [
    ["Base model", input.baseModel],
    ["Output model", input.outputName],
    ["Dataset", `${file} (${input.examples} examples)`],
    ["", ""],
    ["Model size", `${capitalize(proposal.model.category)} (${humanParams(proposal.model.parameters)} params)`],
    ["Task type", capitalize(proposal.dataset?.taskType)],
    ["Config source", `Smart ${capitalize(input.preset)}`],
    ["", ""],
    ["Epochs", `${shortNumber(c.epochs)} (${c.iterations} iterations)`],
    ["Learning rate", shortNumber(c.learningRate)],
    ["LoRA rank", String(c.loraRank)],
    ["Batch size", batch],
  ];
  if (c.quantizationBits) rows.push(["Quantization", `${c.quantizationBits}-bit (QLoRA)`]);
  const lines = rows.map(([label, value]) => (label ? `${(label + ":").padEnd(15)}${value}` : ""));
  if (proposal.estimate?.seconds !== undefined) {
    // The basis says whether the estimate comes from this machine's runs or the prior model.
    const basis = (proposal.estimate.basis ?? "").split("; ")[0];
    lines.push("", `Estimated time: ~${humanDuration(proposal.estimate.seconds)}${basis ? ` (${basis})` : ""}`);
  }
  if (proposal.fitsInMemory === false) lines.push("Warning: this configuration may not fit in memory.");
  return lines;
}

/** The result block after a completed job. */
export function resultLines(event: TrainingProgress, baseModel: string, basePath: string): string[] {
  const path = event.outputPath ?? "?";
  return [
    "Fine-tuning completed!",
    `Model saved to: ${path}`,
    "To load your fine-tuned model:",
    `  cortex-finetune chat ${event.outputName ?? ""}`.trimEnd(),
    `  python -c "from mlx_lm import load; load('${basePath}', adapter_path='${path}')"`,
    `LoRA adapter size: ${humanBytes(event.adapterBytes)}`,
    `Base model: ${baseModel}`,
    ...evaluationLines(event),
  ];
}

/** "Validation perplexity 12.4 -> 3.1" and the loss-curve path, when the job recorded them. */
export function evaluationLines(event: TrainingProgress): string[] {
  const lines: string[] = [];
  const e = event.evaluation;
  if (e && Number.isFinite(e.basePerplexity) && Number.isFinite(e.perplexity)) {
    lines.push(`Validation perplexity: ${e.basePerplexity.toFixed(1)} -> ${e.perplexity.toFixed(1)} `
      + `(loss ${e.baseValLoss.toFixed(3)} -> ${e.valLoss.toFixed(3)})`);
  }
  if (event.lossCurvePath) lines.push(`Loss curve: ${event.lossCurvePath}`);
  return lines;
}

/** A page showing a loss-curve SVG (our own file, embedded inline: no resource loads). */
export function lossCurveHtml(title: string, svg: string): string {
  const body = /^\s*(<\?xml[^>]*>\s*)?<svg[\s>]/i.test(svg) ? svg.replace(/^\s*<\?xml[^>]*>\s*/i, "") : `<p>${escapeHtml("Not an SVG file.")}</p>`;
  return withContentSecurityPolicy(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>`
    + `<style>body{background:#fff;color:#111;padding:1em} svg{max-width:100%;height:auto}</style></head>`
    + `<body><h2>${escapeHtml(title)}</h2>${body}</body></html>`);
}

/** `/gpu`-style lines for cortex/systemInfo. */
export function systemInfoLines(info: SystemInfo): string[] {
  const lines = [
    `Backend: ${info.backend} (${info.device})`,
    `Memory: ${humanBytes(info.memory?.availableBytes)} available of ${humanBytes(info.memory?.totalBytes)}`,
    `BLAS: ${info.blas ? `${info.blas.name}${info.blas.path ? ` (${info.blas.path})` : ""}` : "none found (slow reference BLAS)"}`,
    `Versions: ${Object.entries(info.versions ?? {}).map(([k, v]) => `${k} ${v}`).join(", ")}`,
    `Cortex home: ${info.cortexHome}`,
  ];
  for (const warning of info.warnings ?? []) lines.push(`Warning: ${warning}`);
  return lines;
}

// -- Views: adapter comparison and dataset report -------------------------------------------

/** Escape text for HTML element content and double- or single-quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/**
 * One GFM table cell: HTML escaped (model output is shown, never rendered), `|`, `\` and
 * backticks escaped (no code span can swallow the `<br>`s), newlines as `<br>`,
 * leading/trailing blanks trimmed, an empty text shown as such.
 */
export function markdownCell(text: string): string {
  const cell = escapeHtml(text.trim())
    .replace(/\\/g, "\\\\")
    .replace(/([|`])/g, "\\$1")
    .replace(/\r\n|\r|\n/g, "<br>");
  return cell || "*(empty)*";
}

/** The last part of a model path (`/a/b/tiny-llama` -> `tiny-llama`). */
export function baseName(file: string): string {
  return file.replace(/[\\/]+$/, "").split(/[\\/]/).pop() || file;
}

/** Dataset files the server reads: JSONL, JSON, CSV and TXT. */
export function isDatasetFile(file: string): boolean {
  return /\.(jsonl|json|csv|txt)$/i.test(file);
}

/** Column headings of a comparison: `base` (named after the base model) then each adapter. */
export function comparisonColumns(result: AdapterComparison): string[] {
  const first = result.rows[0]?.outputs ?? [];
  return first.map((output, index) => (index === 0 && output.model === "base" ? `base (${baseName(result.baseModel)})` : output.model));
}

const plural = (count: number, word: string) => `${count} ${word}${count === 1 ? "" : "s"}`;

/** A side-by-side Markdown table of `cortex/compareAdapters`: a row per prompt, a column per model. */
export function compareAdaptersMarkdown(result: AdapterComparison, options: { maxTokens?: number } = {}): string {
  const columns = comparisonColumns(result);
  const lines = [
    "# Adapter comparison",
    "",
    `Base model: \`${result.baseModel.replace(/`/g, "'")}\` · ${plural(result.rows.length, "prompt")} · ` +
      `${plural(Math.max(0, columns.length - 1), "adapter")}${options.maxTokens ? ` · up to ${options.maxTokens} tokens` : ""}`,
    "",
    `| Prompt | ${columns.map(markdownCell).join(" | ")} |`,
    `| --- |${columns.map(() => " --- |").join("")}`,
  ];
  for (const row of result.rows) {
    const cells = columns.map((_, i) => {
      const output = row.outputs[i];
      return output ? `${markdownCell(output.text)}<br><sub>${plural(output.tokens, "token")}</sub>` : "";
    });
    lines.push(`| ${markdownCell(row.prompt)} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n") + "\n";
}

/** The policy the extension's webviews run under: no scripts, no fetches, inline styles only. */
export const WEBVIEW_CSP = "default-src 'none'; style-src 'unsafe-inline'";

/**
 * Put a Content-Security-Policy `<meta>` first in the document's `<head>`: after the `<head>`
 * tag when there is one, in a new `<head>` after `<html>` when there is only that, else wrap
 * the fragment in a whole document. Comments are skipped when looking for the tags, so a
 * `<head>` inside one is not taken for the real one.
 */
export function withContentSecurityPolicy(html: string, policy: string = WEBVIEW_CSP): string {
  const meta = `<meta http-equiv="Content-Security-Policy" content="${escapeHtml(policy)}">`;
  const tags = /<!--[\s\S]*?(?:-->|$)|<(head|html|body)(?=[\s>/])[^>]*>/gi;
  let afterHtml = -1;
  for (const match of html.matchAll(tags)) {
    if (match[0].startsWith("<!--")) continue;
    const end = match.index! + match[0].length;
    const tag = match[1].toLowerCase();
    if (tag === "head") return html.slice(0, end) + meta + html.slice(end);
    if (tag === "html") {
      afterHtml = end;
      continue;
    }
    break; // <body> before any <head>
  }
  if (afterHtml >= 0) return `${html.slice(0, afterHtml)}<head>${meta}</head>${html.slice(afterHtml)}`;
  return `<!DOCTYPE html>\n<html><head>${meta}<meta charset="utf-8"></head><body>${html}</body></html>\n`;
}

const VIEW_STYLE = `
body { font-family: var(--vscode-font-family, sans-serif); font-size: var(--vscode-font-size, 13px);
  color: var(--vscode-foreground, #222); background: var(--vscode-editor-background, #fff); padding: 0 1.2em 1.2em; }
h1 { font-size: 1.4em; font-weight: 600; }
.meta { color: var(--vscode-descriptionForeground, #666); }
code { font-family: var(--vscode-editor-font-family, monospace); }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border: 1px solid var(--vscode-panel-border, #ccc); padding: 6px 8px; vertical-align: top; text-align: left; }
th { background: var(--vscode-editorWidget-background, #f3f3f3); font-weight: 600; }
td { white-space: pre-wrap; overflow-wrap: anywhere; }
td.prompt { font-weight: 600; }
.tokens { display: block; margin-top: 4px; color: var(--vscode-descriptionForeground, #666); font-size: 0.85em; white-space: normal; }
.empty { color: var(--vscode-descriptionForeground, #666); font-style: italic; }
`;

/** The comparison as a whole HTML document (strict CSP, no scripts) with a real table. */
export function compareAdaptersHtml(result: AdapterComparison, options: { maxTokens?: number } = {}): string {
  const columns = comparisonColumns(result);
  const head = `<tr><th>Prompt</th>${columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("")}</tr>`;
  const body = result.rows.map((row) => {
    const cells = columns.map((_, i) => {
      const output = row.outputs[i];
      if (!output) return "<td></td>";
      const text = output.text.trim() ? escapeHtml(output.text) : `<span class="empty">(empty)</span>`;
      return `<td>${text}<span class="tokens">${plural(output.tokens, "token")}</span></td>`;
    });
    return `<tr><td class="prompt">${escapeHtml(row.prompt)}</td>${cells.join("")}</tr>`;
  }).join("\n");
  const summary = `${plural(result.rows.length, "prompt")} · ${plural(Math.max(0, columns.length - 1), "adapter")}` +
    (options.maxTokens ? ` · up to ${options.maxTokens} tokens` : "");
  return withContentSecurityPolicy([
    "<!DOCTYPE html>",
    `<html lang="en"><head><meta charset="utf-8"><title>Adapter comparison</title><style>${VIEW_STYLE}</style></head><body>`,
    "<h1>Adapter comparison</h1>",
    `<p class="meta">Base model <code>${escapeHtml(result.baseModel)}</code> · ${summary}</p>`,
    `<table><thead>${head}</thead><tbody>`,
    body,
    "</tbody></table></body></html>",
    "",
  ].join("\n"));
}

/** `87`, `87.5`: a score as the title shows it. */
function scoreText(score: number): string {
  return Number.isFinite(score) ? String(Number(score.toFixed(1))) : "?";
}

/** `Dataset report — train.jsonl (score 87)`. */
export function datasetReportTitle(file: string, score: number): string {
  return `Dataset report — ${baseName(file)} (score ${scoreText(score)})`;
}

/** Log lines for a report's fixes: `fix-code: title (3 lines: 4, 9, 12)`. */
export function datasetFixLines(fixes: DatasetFix[], maxLines = 10): string[] {
  return fixes.map((fix) => {
    const lines = fix.lines ?? [];
    const shown = lines.slice(0, maxLines).join(", ") + (lines.length > maxLines ? ", …" : "");
    const where = lines.length ? `; line${lines.length === 1 ? "" : "s"} ${shown}` : "";
    return `${fix.code}: ${fix.title} (${plural(fix.count, "occurrence")}${where})`;
  });
}
