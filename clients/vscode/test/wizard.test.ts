// The wizard state machine end to end: the real server, a tiny generated model, real MLX
// training, and a scripted UI answering each step.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { onWorkDoneProgress } from "../src/core/api";
import type { WorkDoneProgress } from "../src/core/types";
import { EXPERT_FIELDS, FineTuneWizard } from "../src/core/wizard";
import { DEFAULT, DISMISS, makeFixture, removeFixture, ScriptedUI, startServer, type Fixture } from "./helpers";

let fixture: Fixture;
let session: Awaited<ReturnType<typeof startServer>>;

before(async () => {
  fixture = makeFixture("wizard");
  session = await startServer(fixture);
});

after(async () => {
  await session.close();
  removeFixture(fixture);
});

const needs = ["cortex/validateDataset", "cortex/sampleDataset", "cortex/createDataset", "cortex/startTraining", "cortex/generate"];
function missing(): string | undefined {
  const absent = needs.filter((m) => !session.methods.includes(m));
  return absent.length ? `server lacks ${absent.join(", ")}` : undefined;
}

test("sample data, Quick preset, training with progress, then Try it", async (t) => {
  if (missing()) return t.skip(missing());
  const ui = new ScriptedUI({
    model: [fixture.modelPath],
    dataOption: ["sample"],
    preset: ["quick"],
    name: [DEFAULT],
    confirm: [true],
    tryIt: [true],
    chatPrompt: ["What is Python?", ""],
  });
  const token = "wizard-test-1";
  const workDone: WorkDoneProgress[] = [];
  const subscription = onWorkDoneProgress(session.api.transport, token, (value) => workDone.push(value));
  const result = await new FineTuneWizard(session.api, ui, { workDoneToken: token, datasetDir: path.join(fixture.root, "datasets"), maxTokens: 8 }).run();
  subscription.dispose();

  assert.equal(result.state, "completed", JSON.stringify({ result, logs: ui.logs, messages: ui.messages }, null, 1));
  assert.equal(result.outputName, "tiny-llama-custom");
  assert.equal(result.preset, "quick");
  assert.ok(ui.messages.some((m) => /^✓ Dataset validated: \d+ examples/.test(m.text)), JSON.stringify(ui.messages));
  // The preset picker shows each preset's gist; the model picker lists the tiny model.
  assert.match(String(ui.picks.preset.find((i) => i.value === "quick")?.detail), /epochs · lr .* · rank \d+/);
  assert.ok(ui.picks.model.some((i) => i.value === fixture.modelPath && /Tiny · 140K params/.test(String(i.description))));
  // The summary block, with an estimated time.
  const summary = ui.confirmDetails.confirm ?? "";
  assert.match(summary, /Base model: +tiny-llama/);
  assert.match(summary, /Output model: +tiny-llama-custom/);
  assert.match(summary, /Config source: Smart Quick/);
  assert.match(summary, /Estimated time: ~\d/);
  // Live progress: percentages rise to 100, lines show epoch and loss.
  const percents = ui.reports.map((r) => r.percentage).filter((p): p is number => p !== undefined);
  assert.equal(percents[percents.length - 1], 100);
  assert.ok(ui.reports.some((r) => /Epoch \d+\/\d+ \| step \d+\/\d+ \| Loss \d/.test(r.message)), JSON.stringify(ui.reports.slice(0, 5)));
  // $/progress through our work-done token: begin, reports, end.
  assert.equal(workDone[0]?.kind, "begin");
  assert.equal(workDone[workDone.length - 1]?.kind, "end");
  // The result: saved under CORTEX_HOME, listed as fine-tuned; Try it answered once.
  const outputPath = path.join(fixture.home, "mlx_models", "tiny-llama-custom");
  assert.equal(result.final?.outputPath, outputPath);
  assert.ok(fs.existsSync(path.join(outputPath, "fine-tuned.marker")));
  assert.ok(ui.logs.some((l) => l.startsWith("LoRA adapter size: ")));
  assert.ok(ui.logs.some((l) => /^Validation perplexity: [\d.]+ -> [\d.]+ \(loss/.test(l)), JSON.stringify(ui.logs));
  assert.ok(ui.logs.some((l) => l === `Loss curve: ${path.join(outputPath, "loss-curve.svg")}`), JSON.stringify(ui.logs));
  assert.equal(result.replies?.length, 1);
  const listed = (await session.api.listModels()).find((m) => m.name === "tiny-llama-custom");
  assert.equal(listed?.kind, "fine-tuned");
});

test("create data interactively (warned under 5), Expert preset with a rejected value, name validation", async (t) => {
  if (missing()) return t.skip(missing());
  const examples = [
    ["What is Python?", "A programming language."], ["What is MLX?", "An array framework for Apple silicon."],
    ["What is LoRA?", "Low-rank adapters for fine-tuning."], ["What is a GPU?", "A graphics processor."],
    ["What is JSONL?", "One JSON object per line."], ["What is Rust?", "A systems programming language."],
  ];
  const expert: Record<string, unknown[]> = {};
  for (const [key] of EXPERT_FIELDS) expert[`expert.${key}`] = [DEFAULT];
  expert["expert.epochs"] = ["1"];
  expert["expert.learningRate"] = ["1e-4"];
  expert["expert.loraRank"] = ["-3", "4"]; // the server refuses -3 and the wizard asks again
  const ui = new ScriptedUI({
    model: [fixture.modelPath],
    dataOption: ["create"],
    createPath: [path.join(fixture.root, "made.jsonl")],
    examplePrompt: [...examples.slice(0, 3).map((e) => e[0]), "done", ...examples.slice(3).map((e) => e[0]), "done"],
    exampleResponse: examples.map((e) => e[1]),
    addMore: [true],
    preset: ["expert"],
    ...expert,
    name: ["../escape", "jobs", "tiny-expert"],
    confirm: [true],
    tryIt: [false],
  });
  const result = await new FineTuneWizard(session.api, ui, { datasetDir: path.join(fixture.root, "datasets") }).run();
  assert.equal(result.state, "completed", JSON.stringify({ logs: ui.logs, messages: ui.messages }, null, 1));
  assert.equal(ui.asked.filter((s) => s === "addMore").length, 1, "warned once, with 3 examples");
  const written = fs.readFileSync(path.join(fixture.root, "made.jsonl"), "utf8").trim().split("\n");
  assert.equal(written.length, 6);
  assert.deepEqual(result.overrides, { epochs: 1, learningRate: 1e-4, loraRank: 4 });
  assert.ok(ui.messages.some((m) => m.kind === "error" && /loraRank/.test(m.text)), JSON.stringify(ui.messages));
  assert.equal(ui.asked.filter((s) => s === "expert.loraRank").length, 2);
  assert.deepEqual(ui.messages.filter((m) => m.kind === "validation").map((m) => m.text.slice(0, 20)), ["Use a plain name, no", "'jobs' is a reserved"]);
  assert.equal(result.outputName, "tiny-expert");
  assert.match(ui.confirmDetails.confirm ?? "", /Config source: Smart Expert/);
  assert.match(ui.confirmDetails.confirm ?? "", /Epochs: +1 \(/);
});

test("a broken file shows its problems with line numbers, then the sample; declining the summary trains nothing", async (t) => {
  if (missing()) return t.skip(missing());
  const broken = path.join(fixture.root, "broken.jsonl");
  fs.writeFileSync(broken, '{"prompt": "a", "response": "b"}\n{"prompt": "x"}\nnot json\n');
  const ui = new ScriptedUI({
    model: [fixture.modelPath],
    dataOption: ["file", "sample"],
    datasetPath: [broken],
    preset: ["balanced"],
    name: [DEFAULT],
    confirm: [false],
  });
  const jobsBefore = (await session.api.listJobs()).length;
  const result = await new FineTuneWizard(session.api, ui, { datasetDir: path.join(fixture.root, "datasets") }).run();
  assert.equal(result.state, "not-started");
  assert.ok(ui.logs.includes("  broken.jsonl:2:1: error [missing-field] " + ui.logs.find((l) => l.includes("[missing-field]"))?.split("[missing-field] ")[1]));
  assert.ok(ui.logs.some((l) => l.startsWith("  broken.jsonl:3:1: error [json-syntax]")), ui.logs.join("\n"));
  assert.ok(ui.messages.some((m) => m.kind === "error" && /^Dataset has 2 errors/.test(m.text)), JSON.stringify(ui.messages));
  // tiny-llama-custom may exist from the first test: the suggestion never collides.
  assert.match(result.outputName ?? "", /^tiny-llama-custom(-\d+)?$/);
  assert.equal((await session.api.listJobs()).length, jobsBefore);
});

test("Escape at any step stops the wizard cleanly", async (t) => {
  if (missing()) return t.skip(missing());
  const ui = new ScriptedUI({ model: [fixture.modelPath], dataOption: ["sample"], preset: [DISMISS] });
  const result = await new FineTuneWizard(session.api, ui, { datasetDir: path.join(fixture.root, "datasets") }).run();
  assert.equal(result.state, "aborted");
  assert.ok(ui.logs.includes("Wizard cancelled."));
});

test("the progress notification's cancel button cancels the job", async (t) => {
  if (missing()) return t.skip(missing());
  const expert: Record<string, unknown[]> = {};
  for (const [key] of EXPERT_FIELDS) expert[`expert.${key}`] = [DEFAULT];
  expert["expert.epochs"] = ["400"];
  const ui = new ScriptedUI({
    model: [fixture.modelPath], dataOption: ["sample"], preset: ["expert"], ...expert,
    name: ["tiny-cancelled"], confirm: [true],
  });
  ui.cancelAfterReports = 3;
  const result = await new FineTuneWizard(session.api, ui, { datasetDir: path.join(fixture.root, "datasets") }).run();
  assert.equal(result.state, "cancelled", JSON.stringify(result.final));
  assert.ok(ui.logs.includes("Cancelling (the last checkpoint is kept)..."));
  assert.ok(!fs.existsSync(path.join(fixture.home, "mlx_models", "tiny-cancelled")));
  const job = (await session.api.listJobs()).find((j) => j.jobId === result.jobId);
  assert.equal(job?.state, "cancelled");
});
