// The request wrappers against the real server over stdio (vscode-jsonrpc, no editor).
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";
import { CancellationTokenSource } from "vscode-jsonrpc";
import { CortexRpcError, isCancelled, onWorkDoneProgress } from "../src/core/api";
import { compareAdaptersHtml, compareAdaptersMarkdown, summarizeValidation, withContentSecurityPolicy } from "../src/core/format";
import { makeFixture, removeFixture, SAMPLE_DATASET, startServer, type Fixture } from "./helpers";

let fixture: Fixture;
let session: Awaited<ReturnType<typeof startServer>>;

const BROKEN = [
  '{"prompt": "What is Python?", "response": "A programming language."}',
  '{"prompt": "no response here"}',
  "not json at all",
  '{"prompt": "Empty", "response": ""}',
  "",
].join("\n");

before(async () => {
  fixture = makeFixture("api");
  session = await startServer(fixture);
});

after(async () => {
  const code = await session.close();
  assert.equal(code, 0, session.stderr.join(""));
  removeFixture(fixture);
});

test("initialize advertises the cortex methods and dataset sync", () => {
  assert.equal(session.initializeResult.serverInfo?.name, "cortex-rpc");
  for (const method of ["cortex/systemInfo", "cortex/listModels", "cortex/inspectModel", "cortex/proposeConfig"]) {
    assert.ok(session.methods.includes(method), method);
  }
});

test("systemInfo reports backend, memory and the CORTEX_HOME we passed", async () => {
  const info = await session.api.systemInfo();
  assert.ok(info.backend);
  assert.ok(info.memory.totalBytes > 0);
  assert.equal(fs.realpathSync(info.cortexHome), fs.realpathSync(fixture.home));
});

test("listModels finds the tiny model through initializationOptions.modelDirs", async () => {
  const models = await session.api.listModels();
  const tiny = models.find((m) => m.name === "tiny-llama");
  assert.ok(tiny, JSON.stringify(models));
  assert.equal(tiny.category, "tiny");
  const info = await session.api.inspectModel(tiny.path);
  assert.equal(info.architecture, "llama");
  assert.ok((info.parameters ?? 0) > 100_000);
});

test("errors carry the JSON-RPC code and data.code", async () => {
  await assert.rejects(session.api.inspectModel(path.join(fixture.root, "nope")), (error: unknown) => {
    assert.ok(error instanceof CortexRpcError);
    assert.equal(error.code, -32000);
    assert.equal(error.data?.code, "model-not-found");
    return true;
  });
  await assert.rejects(session.api.proposeConfig(fixture.modelPath, undefined, "expert", { loraRnak: 4 }), (error: unknown) => {
    assert.ok(error instanceof CortexRpcError);
    assert.equal(error.code, -32602);
    assert.equal(error.data?.field, "overrides.loraRnak");
    return true;
  });
});

test("proposeConfig explains every preset", async () => {
  for (const preset of ["quick", "balanced", "quality"] as const) {
    const proposal = await session.api.proposeConfig(fixture.modelPath, undefined, preset);
    assert.equal(proposal.preset, preset);
    assert.ok(proposal.explanations.length > 0);
    assert.ok(proposal.config.learningRate > 0);
  }
});

test("validateDataset reports lines and codes; sample and create datasets", async (t) => {
  if (!session.methods.includes("cortex/validateDataset")) return t.skip("cortex/validateDataset not in this server yet");
  const broken = path.join(fixture.root, "broken.jsonl");
  fs.writeFileSync(broken, BROKEN);
  const report = await session.api.validateDataset({ path: broken });
  assert.equal(report.ok, false);
  const errors = report.diagnostics.filter((d) => d.severity === 1).map((d) => [d.range.start.line, d.code]);
  assert.deepEqual(errors, [[1, "missing-field"], [2, "json-syntax"], [3, "empty-field"]]);
  const summary = summarizeValidation("broken.jsonl", report);
  assert.ok(summary.lines.some((l) => l.startsWith("broken.jsonl:3:1: error [json-syntax]")), summary.lines.join("\n"));

  const fromText = await session.api.validateDataset({ text: BROKEN, format: "jsonl" });
  assert.equal(fromText.diagnostics.length, report.diagnostics.length);

  const sample = await session.api.sampleDataset(path.join(fixture.root, "sample.jsonl"));
  assert.ok(sample.examples >= 5);
  assert.equal((await session.api.validateDataset({ path: sample.path })).ok, true);

  const created = await session.api.createDataset(path.join(fixture.root, "made.jsonl"), [{ prompt: "hi", response: "hello" }]);
  assert.equal(created.examples, 1);
  assert.ok(created.warnings.length >= 1, "fewer than 5 examples warns");
  await assert.rejects(session.api.createDataset(created.path, [{ prompt: "a", response: "b" }]),
    (error: CortexRpcError) => error.data?.code === "file-exists");
});

test("live diagnostics: didOpen then an incremental didChange", async (t) => {
  if (!session.initializeResult.capabilities.textDocumentSync) return t.skip("no text document sync in this server yet");
  const uri = pathToFileURL(path.join(fixture.root, "live.jsonl")).href;
  const published: { uri: string; diagnostics: { range: { start: { line: number } }; code: string; severity: number }[] }[] = [];
  const summaries: { uri: string; examples: number; errors: number }[] = [];
  const waiters: (() => void)[] = [];
  session.connection.onNotification("textDocument/publishDiagnostics", (params) => {
    published.push(params);
    waiters.splice(0).forEach((w) => w());
  });
  session.connection.onNotification("cortex/datasetSummary", (params) => { summaries.push(params); });
  const nextFor = async (count: number) => {
    const deadline = Date.now() + 15000;
    while (published.filter((p) => p.uri === uri).length < count) {
      if (Date.now() > deadline) throw new Error("no publishDiagnostics");
      await new Promise<void>((resolve) => { waiters.push(resolve); setTimeout(resolve, 200); });
    }
    return published.filter((p) => p.uri === uri)[count - 1];
  };
  await session.connection.sendNotification("textDocument/didOpen", { textDocument: { uri, languageId: "jsonl", version: 1, text: BROKEN } });
  const first = await nextFor(1);
  const codes = first.diagnostics.filter((d) => d.severity === 1).map((d) => [d.range.start.line, d.code]);
  assert.deepEqual(codes, [[1, "missing-field"], [2, "json-syntax"], [3, "empty-field"]]);
  // Replace line 3 ("not json at all") with a valid record.
  await session.connection.sendNotification("textDocument/didChange", {
    textDocument: { uri, version: 2 },
    contentChanges: [{ range: { start: { line: 2, character: 0 }, end: { line: 2, character: 15 } }, text: '{"prompt": "a", "response": "b"}' }],
  });
  const second = await nextFor(2);
  assert.deepEqual(second.diagnostics.filter((d) => d.severity === 1).map((d) => [d.range.start.line, d.code]),
    [[1, "missing-field"], [3, "empty-field"]]);
  if (summaries.length) assert.equal(summaries[summaries.length - 1].uri, uri);
  if (session.initializeResult.capabilities.hoverProvider) {
    const hover: any = await session.connection.sendRequest("textDocument/hover", { textDocument: { uri }, position: { line: 1, character: 3 } });
    const text = JSON.stringify(hover?.contents ?? "");
    assert.ok(text.length > 2, "hover on a record has contents");
  }
  if (session.initializeResult.capabilities.codeActionProvider) {
    const actions: any = await session.connection.sendRequest("textDocument/codeAction", {
      textDocument: { uri }, range: second.diagnostics[0].range, context: { diagnostics: second.diagnostics },
    });
    assert.ok(Array.isArray(actions ?? []), "codeAction answers a list");
  }
  await session.connection.sendNotification("textDocument/didClose", { textDocument: { uri } });
});

test("listAdapters and compareAdapters on a freshly trained tiny adapter; cancelling a comparison", async (t) => {
  const needs = ["cortex/startTraining", "cortex/listAdapters", "cortex/compareAdapters"];
  const absent = needs.filter((m) => !session.methods.includes(m));
  if (absent.length) return t.skip(`server lacks ${absent.join(", ")}`);
  const started = await session.api.startTraining({
    model: fixture.modelPath, dataset: SAMPLE_DATASET, outputName: "tiny-compare", preset: "quick", config: { iterations: 4 },
  });
  const final = await session.api.followJob(started.jobId);
  assert.equal(final.state, "completed", JSON.stringify(final));

  const adapters = await session.api.listAdapters(fixture.modelPath);
  assert.deepEqual(adapters.map((a) => a.name), ["tiny-compare"]);
  const workDone: string[] = [];
  const reports = onWorkDoneProgress(session.api.transport, "compare-1", (v) => { if (v.kind === "report") workDone.push(`${v.message} ${v.percentage}`); });
  const result = await session.api.compareAdapters({
    baseModel: fixture.modelPath, adapters: [adapters[0].path], prompts: ["What is Git?", "a | b\nc"], maxTokens: 4, workDoneToken: "compare-1",
  });
  reports.dispose();
  assert.deepEqual(workDone, ["1/4 generations 25", "2/4 generations 50", "3/4 generations 75", "4/4 generations 100"]);
  assert.equal(result.rows.length, 2);
  assert.deepEqual(result.rows[0].outputs.map((o) => o.model), ["base", "tiny-compare"]);
  assert.equal(result.rows[1].prompt, "a | b\nc");
  for (const output of result.rows.flatMap((r) => r.outputs)) assert.ok(output.tokens >= 0 && output.tokens <= 4, JSON.stringify(output));
  const markdown = compareAdaptersMarkdown(result, { maxTokens: 4 }).trimEnd().split("\n");
  assert.equal(markdown[4], "| Prompt | base (tiny-llama) | tiny-compare |");
  assert.ok(markdown[7].startsWith("| a \\| b<br>c | "), markdown[7]);
  assert.equal(compareAdaptersHtml(result).match(/<tr>/g)?.length, 3);

  // Cancelled through its token: rejected at once; the server keeps answering afterwards.
  const source = new CancellationTokenSource();
  const cancelled = session.api.compareAdapters({ baseModel: fixture.modelPath, adapters: ["tiny-compare"], prompts: ["Hello"], maxTokens: 64 }, source.token);
  source.cancel();
  await assert.rejects(cancelled, isCancelled);
  assert.equal((await session.api.listAdapters(fixture.modelPath)).length, 1);
});

test("datasetReport scores a file and its HTML takes the webview's CSP", async (t) => {
  if (!session.methods.includes("cortex/datasetReport")) return t.skip("cortex/datasetReport not in this server yet");
  const report = await session.api.datasetReport(SAMPLE_DATASET);
  assert.equal(typeof report.score, "number");
  assert.ok(report.score >= 0 && report.score <= 100);
  assert.ok(report.html && report.html.includes(`${report.score}`), "the page shows the score");
  const markdown = await session.api.datasetReport(SAMPLE_DATASET, undefined, undefined, "markdown");
  assert.ok(markdown.markdown && markdown.markdown.length > 0 && markdown.html === undefined);
  assert.ok(Array.isArray(report.fixes));
  for (const fix of report.fixes) assert.equal(typeof fix.code, "string");
  const html = withContentSecurityPolicy(report.html);
  assert.match(html, /<head[^>]*><meta http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;; style-src &#39;unsafe-inline&#39;">/i);
  await assert.rejects(session.api.datasetReport(path.join(fixture.root, "missing.jsonl")), (error: unknown) => error instanceof CortexRpcError);
});
