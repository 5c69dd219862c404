// Formatting and name rules: pure functions, no server.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  diagnosticLine, humanBytes, humanDuration, humanParams, progressLine, progressPercent, shortNumber,
  statusBarText, summarizeValidation, trainingSummary,
} from "../src/core/format";
import { nameProblem, suggestModelName } from "../src/core/names";
import { parseValue } from "../src/core/wizard";
import type { Proposal, TrainingProgress } from "../src/core/types";

test("human units match the terminal wizard", () => {
  assert.equal(humanParams(7_241_732_096), "7.2B");
  assert.equal(humanParams(139_584), "140K");
  assert.equal(humanParams(null), "?");
  assert.equal(humanBytes(2_300_000), "2.3 MB");
  assert.equal(humanBytes(999), "999 B");
  assert.equal(humanBytes(14_500_000_000), "14.5 GB");
  assert.equal(humanDuration(42), "42s");
  assert.equal(humanDuration(185), "3m 05s");
  assert.equal(humanDuration(3720), "1h 02m");
  assert.equal(shortNumber(0.0001), "1e-4");
  assert.equal(shortNumber(0.001), "0.001");
  assert.equal(shortNumber(3), "3");
  assert.equal(shortNumber(2e-5), "2e-5");
});

const running: TrainingProgress = {
  jobId: "j", state: "running", event: "progress", outputName: "tiny-custom", iteration: 5, totalIterations: 10,
  epoch: 0.9091, totalEpochs: 1.8182, trainLoss: 6.8355808, valLoss: 7.1056661, tokensPerSecond: 10658.7, etaSeconds: 0.11,
  peakMemoryBytes: 9_528_780,
};

test("progress line, percent and status bar", () => {
  assert.equal(progressLine(running), "Epoch 1/2 | step 5/10 | Loss 6.8356 | Val 7.1057 | 10659 tok/s | ETA 0s | mem 9.5 MB");
  assert.equal(progressPercent(running), 50);
  assert.equal(statusBarText(running), "Cortex: Epoch 1/2 · loss 6.836");
  assert.equal(statusBarText({ ...running, epoch: 1.0909 }), "Cortex: Epoch 2/2 · loss 6.836");
  assert.equal(statusBarText({ jobId: "j", state: "queued", outputName: "x" }), "Cortex: x queued");
  assert.equal(progressLine({ jobId: "j", state: "completed", message: "Completed" }), "Completed");
});

test("preference training shows reward accuracy and margin when present", () => {
  const dpo: TrainingProgress = { ...running, valLoss: undefined, rewardAccuracy: 0.75, margin: 0.12345 };
  assert.equal(progressLine(dpo), "Epoch 1/2 | step 5/10 | Loss 6.8356 | Acc 75% | Margin 0.123 | 10659 tok/s | ETA 0s | mem 9.5 MB");
  assert.equal(statusBarText(dpo), "Cortex: Epoch 1/2 · loss 6.836 · acc 75%");
});

test("validation summary names lines and codes", () => {
  const summary = summarizeValidation("bad.jsonl", {
    ok: false, format: "jsonl", examples: 1, total: 2, truncated: false,
    diagnostics: [
      { range: { start: { line: 2, character: 0 }, end: { line: 2, character: 1 } }, severity: 1, code: "json-syntax", message: "Invalid JSON" },
      { range: { start: { line: 0, character: 0 }, end: { line: 0, character: 1 } }, severity: 2, code: "too-few-examples", message: "Only 1" },
    ],
  });
  assert.equal(summary.ok, false);
  assert.equal(summary.errors, 1);
  assert.deepEqual(summary.lines, ["bad.jsonl:3:1: error [json-syntax] Invalid JSON", "bad.jsonl:1:1: warning [too-few-examples] Only 1"]);
  assert.match(summary.headline, /^Dataset has 1 error: Invalid JSON/);
  assert.equal(diagnosticLine("f", { range: { start: { line: 0, character: 4 }, end: { line: 0, character: 5 } }, message: "m" }), "f:1:5: error [?] m");
});

test("training summary block", () => {
  const proposal = {
    preset: "balanced",
    config: { epochs: 4, iterations: 200, learningRate: 1e-4, loraRank: 16, batchSize: 1, gradAccumulationSteps: 8, quantizationBits: 8 },
    model: { name: "m", path: "/m", category: "medium", parameters: 7_200_000_000 },
    dataset: { examples: 50, taskType: "chat" },
    explanations: [], estimate: { seconds: 480 },
  } as unknown as Proposal;
  const lines = trainingSummary({ baseModel: "llama-3.1-8b", outputName: "llama-3.1-8b-custom", datasetPath: "/d/my_data.jsonl", examples: 50, preset: "balanced", proposal });
  assert.ok(lines.includes("Dataset:       my_data.jsonl (50 examples)"));
  assert.ok(lines.includes("Model size:    Medium (7.2B params)"));
  assert.ok(lines.includes("Learning rate: 1e-4"));
  assert.ok(lines.includes("Batch size:    1 (x8 acc.)"));
  assert.ok(lines.includes("Quantization:  8-bit (QLoRA)"));
  assert.equal(lines[lines.length - 1], "Estimated time: ~8m 00s");
  const calibrated = { ...proposal, estimate: { seconds: 30, basis: "calibrated from 2 run(s) on this machine (one of the same shape); 28 tokens per example" } } as Proposal;
  const withBasis = trainingSummary({ baseModel: "b", outputName: "o", datasetPath: "/d.jsonl", examples: 50, preset: "balanced", proposal: calibrated });
  assert.equal(withBasis[withBasis.length - 1], "Estimated time: ~30s (calibrated from 2 run(s) on this machine (one of the same shape))");
});

test("model names: server rules and BASE-custom suggestion", () => {
  assert.equal(nameProblem("llama-custom"), undefined);
  assert.match(nameProblem("../etc")!, /plain name/);
  assert.match(nameProblem("-x")!, /letters, digits/);
  assert.match(nameProblem("jobs")!, /reserved/);
  assert.match(nameProblem("a", ["a"])!, /already exists/);
  assert.equal(suggestModelName("Llama 3.1 8B"), "Llama-3.1-8B-custom");
  assert.equal(suggestModelName("mlx-community/Qwen2.5-0.5B-Instruct-4bit"), "Qwen2.5-0.5B-Instruct-4bit-custom");
  assert.equal(suggestModelName("tiny", ["tiny-custom", "tiny-custom-2"]), "tiny-custom-3");
});

test("expert answers parse as JSON values", () => {
  assert.equal(parseValue("5e-5"), 5e-5);
  assert.equal(parseValue("none"), null);
  assert.equal(parseValue(""), null);
  assert.equal(parseValue("true"), true);
  assert.equal(parseValue("dora"), "dora");
});
