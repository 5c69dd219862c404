// Test fixtures: the real server from the repo's venv, a temporary CORTEX_HOME, a tiny model
// generated on the spot, and a scripted WizardUI.

import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { startCortex, type CortexSession } from "../src/core/connection";
import type { PickItem, WizardUI } from "../src/core/wizard";

const PACKAGE_DIR = path.resolve(__dirname, "..", "..");
const REPO_DIR = path.resolve(PACKAGE_DIR, "..", "..");

/** The server command: $CORTEX_RPC, else the repo's `.venv/bin/cortex-rpc`. */
export const SERVER = process.env.CORTEX_RPC || path.join(REPO_DIR, ".venv", "bin", "cortex-rpc");
const PYTHON = process.env.CORTEX_PYTHON || path.join(path.dirname(SERVER), "python");
export const SAMPLE_DATASET = path.join(REPO_DIR, "cortex_rpc", "data", "sample_dataset.jsonl");

export interface Fixture { root: string; home: string; modelsDir: string; modelPath: string }

/** A temp folder with `home/` (CORTEX_HOME) and `models/tiny-llama` (a ~140K-param model). */
export function makeFixture(prefix: string): Fixture {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `cortex-vscode-${prefix}-`));
  const home = path.join(root, "home");
  const modelsDir = path.join(root, "models");
  const modelPath = path.join(modelsDir, "tiny-llama");
  fs.mkdirSync(home, { recursive: true });
  execFileSync(PYTHON, ["-m", "cortex_rpc.models.tiny", modelPath], { stdio: ["ignore", "ignore", "inherit"] });
  return { root, home, modelsDir, modelPath };
}

export function removeFixture(fixture: Fixture): void {
  fs.rmSync(fixture.root, { recursive: true, force: true });
}

export async function startServer(fixture: Fixture): Promise<CortexSession & { stderr: string[] }> {
  const stderr: string[] = [];
  const session = await startCortex({
    command: SERVER,
    env: { ...process.env, CORTEX_HOME: fixture.home, HF_HUB_CACHE: path.join(fixture.root, "hf") },
    initializationOptions: { modelDirs: [fixture.modelsDir], cortexHome: fixture.home },
    onStderr: (text) => stderr.push(text),
  });
  return Object.assign(session, { stderr });
}

/** Answer for an input step: accept the value the wizard proposed. */
export const DEFAULT = Symbol("default");
/** Answer for any step: dismiss it (Escape). */
export const DISMISS = Symbol("dismiss");
type Answer = unknown;

/**
 * A WizardUI that answers each named step from a script and records everything shown.
 * `answers[step]` is a queue; a pick answer is the item's value, or a function choosing one.
 */
export class ScriptedUI implements WizardUI {
  readonly logs: string[] = [];
  readonly messages: { kind: string; text: string }[] = [];
  readonly asked: string[] = [];
  readonly reports: { message: string; percentage?: number }[] = [];
  readonly picks: Record<string, PickItem<unknown>[]> = {};
  confirmDetails: Record<string, string | undefined> = {};
  /** Press the progress notification's cancel button after this many reports. */
  cancelAfterReports?: number;

  constructor(private readonly answers: Record<string, Answer[]>) {}

  private next(step: string): Answer {
    this.asked.push(step);
    const queue = this.answers[step];
    if (!queue || queue.length === 0) throw new Error(`unscripted step ${step}; asked so far: ${this.asked.join(", ")}`);
    return queue.shift();
  }

  async pick<T>(step: string, _title: string, items: PickItem<T>[]): Promise<T | undefined> {
    this.picks[step] = items as PickItem<unknown>[];
    const answer = this.next(step);
    if (answer === DISMISS) return undefined;
    const item = typeof answer === "function"
      ? items.find((i) => (answer as (i: PickItem<T>) => boolean)(i))
      : items.find((i) => i.value === answer);
    if (!item) throw new Error(`step ${step}: no item ${String(answer)} among ${items.map((i) => String(i.value)).join(", ")}`);
    return item.value;
  }

  async input(step: string, _title: string, options: { value?: string; validate?: (v: string) => string | undefined } = {}): Promise<string | undefined> {
    const answer = this.next(step);
    if (answer === DISMISS) return undefined;
    const value = answer === DEFAULT ? options.value ?? "" : String(answer);
    const problem = options.validate?.(value);
    if (problem) {
      this.messages.push({ kind: "validation", text: problem });
      return this.input(step, _title, options);
    }
    return value;
  }

  async confirm(step: string, _message: string, options: { detail?: string } = {}): Promise<boolean> {
    this.confirmDetails[step] = options.detail;
    const answer = this.next(step);
    return answer === true;
  }

  message(kind: "info" | "warning" | "error", text: string): void {
    this.messages.push({ kind, text });
  }

  log(line: string): void {
    this.logs.push(line);
  }

  async progress<T>(_title: string, work: (report: (message: string, percentage?: number) => void, onCancel: (handler: () => void) => void) => Promise<T>): Promise<T> {
    let cancel: (() => void) | undefined;
    let cancelled = false;
    return work((message, percentage) => {
      this.reports.push({ message, percentage });
      if (this.cancelAfterReports !== undefined && this.reports.length >= this.cancelAfterReports && cancel && !cancelled) {
        cancelled = true;
        cancel();
      }
    }, (handler) => { cancel = handler; });
  }
}
