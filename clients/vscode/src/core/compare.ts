// The choices behind "Cortex: Compare Adapters": which bases to offer, how typed prompts are
// split, and the prompts a dataset file starts with. No `vscode` import here.

import type { ModelEntry } from "./types";

/** The server's limits on cortex/compareAdapters (schemas/rpc/compareAdapters.params.schema.json). */
export const MAX_COMPARE_ADAPTERS = 16;
export const MAX_COMPARE_PROMPTS = 32;
export const MAX_PROMPT_LENGTH = 20000;
export const PROMPT_SEPARATOR = ";;";

/** Prompts typed in one input box: separated by `;;` (or newlines, when pasted), blanks dropped. */
export function splitPrompts(text: string): string[] {
  return text.split(/;;|\r\n|\r|\n/).map((p) => p.trim()).filter(Boolean);
}

/** The input box's value for prompts used before (newlines inside one become spaces). */
export function joinPrompts(prompts: string[]): string {
  return prompts.map((p) => p.replace(/\s*[\r\n]+\s*/g, " ").trim()).filter(Boolean).join(` ${PROMPT_SEPARATOR} `);
}

/** Why these prompts cannot be sent, or undefined when they can. */
export function promptsProblem(prompts: string[]): string | undefined {
  if (!prompts.length) return `Enter at least one prompt (several: separate them with ${PROMPT_SEPARATOR})`;
  if (prompts.length > MAX_COMPARE_PROMPTS) return `${prompts.length} prompts; compare at most ${MAX_COMPARE_PROMPTS} at a time`;
  const long = prompts.findIndex((p) => p.length > MAX_PROMPT_LENGTH);
  if (long >= 0) return `Prompt ${long + 1} has ${prompts[long].length} characters; the limit is ${MAX_PROMPT_LENGTH}`;
  return undefined;
}

export interface BaseChoice { name: string; path: string; adapters: number; last: boolean }

const stripSlash = (p: string) => p.replace(/[\\/]+$/, "");

/**
 * The base models to compare adapters of, from cortex/listModels: every readable base, plus
 * bases that fine-tuned models name but that are not listed (a path given to the wizard).
 * `adapters` counts the fine-tuned models naming each base (a hint: the server decides).
 * Order: the last model the wizard used, then bases with adapters (most first), then the rest.
 */
export function baseModelChoices(models: ModelEntry[], lastModel?: string): BaseChoice[] {
  const isFineTuned = (m: ModelEntry) => m.kind === "fine-tuned" || !!m.fineTuned;
  const choices = new Map<string, BaseChoice>();
  for (const m of models) {
    if (!isFineTuned(m) && !m.error) choices.set(stripSlash(m.path), { name: m.name, path: m.path, adapters: 0, last: false });
  }
  for (const m of models) {
    if (!isFineTuned(m) || !m.baseModel) continue;
    const key = stripSlash(m.baseModel);
    const choice = choices.get(key) ?? { name: key.split(/[\\/]/).pop() || key, path: m.baseModel, adapters: 0, last: false };
    choice.adapters += 1;
    choices.set(key, choice);
  }
  if (lastModel && choices.has(stripSlash(lastModel))) choices.get(stripSlash(lastModel))!.last = true;
  return [...choices.values()].sort((a, b) => Number(b.last) - Number(a.last) || b.adapters - a.adapters || a.name.localeCompare(b.name));
}

function userText(record: unknown): string | undefined {
  if (!record || typeof record !== "object" || Array.isArray(record)) return undefined;
  const r = record as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === "string" && v.trim() ? v.trim() : undefined);
  if (str(r.prompt)) return str(r.prompt);
  if (str(r.question)) return str(r.question);
  if (str(r.instruction)) return str(r.input) ? `${str(r.instruction)}\n\n${str(r.input)}` : str(r.instruction);
  for (const key of ["messages", "conversations"]) {
    const turns = r[key];
    if (!Array.isArray(turns)) continue;
    for (const turn of turns) {
      const t = turn as Record<string, unknown> | null;
      const role = String(t?.role ?? t?.from ?? "");
      if (role === "user" || role === "human") return str(t?.content) ?? str(t?.value);
    }
  }
  return undefined;
}

/**
 * The first `limit` prompts of a JSONL file or a JSON array (prompt/response, question/answer,
 * instruction/input/output, chat `messages` or ShareGPT `conversations` records). Lines that
 * are not JSON, and records without a user turn, are skipped; other formats give none.
 */
export function datasetPrompts(text: string, limit = 3): string[] {
  const prompts: string[] = [];
  const trimmed = text.trimStart();
  let records: unknown[] = [];
  if (trimmed.startsWith("[")) {
    try {
      const parsed = JSON.parse(trimmed);
      if (Array.isArray(parsed)) records = parsed;
    } catch {
      return [];
    }
  } else {
    // Read lines lazily: the file may be large and only its first records matter.
    for (let start = 0; start < text.length && records.length < limit * 4;) {
      const end = text.indexOf("\n", start);
      const line = text.slice(start, end < 0 ? text.length : end);
      start = end < 0 ? text.length : end + 1;
      if (!line.trim()) continue;
      try {
        records.push(JSON.parse(line));
      } catch {
        // not a record: skip it
      }
    }
  }
  for (const record of records) {
    const prompt = userText(record);
    if (prompt && prompt.length <= MAX_PROMPT_LENGTH) prompts.push(prompt);
    if (prompts.length >= limit) break;
  }
  return prompts;
}
