// Cortex: Preview Training Text: the request it sends and how it renders a result (fake
// transport), the status-bar line with trained tokens, then the real server when it has
// cortex/trainingPreview.
import assert from "node:assert/strict";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";
import { CortexApi, type CancellationLike, type RpcTransport } from "../src/core/api";
import {
  datasetSummaryText, issueLine, previewHeader, previewTraining, recordAt, renderPreview, summaryTrainedTokens, TEXT_END, TEXT_START,
  trainingPreviewParams,
} from "../src/core/preview";
import type { TrainingPreview, TrainingPreviewRecord } from "../src/core/types";
import { makeFixture, removeFixture, startServer, type Fixture } from "./helpers";

function fakeTransport() {
  const sent: { method: string; params: unknown; token?: CancellationLike }[] = [];
  const replies: unknown[] = [];
  const transport: RpcTransport = {
    sendRequest(method, params, token) {
      sent.push({ method, params, token });
      return Promise.resolve(replies.shift());
    },
    onNotification: () => ({ dispose() {} }),
    onProgress: () => ({ dispose() {} }),
  };
  return { transport, sent, replies };
}

const record: TrainingPreviewRecord = {
  line: 2,
  tokens: 21,
  trainedTokens: 6,
  truncated: false,
  lostTrainedTokens: 0,
  issues: [{ code: "template-no-system", severity: "warning", message: "The template drops the system turn", turn: 0 }],
  segments: [
    { text: "<|user|>\nWhat is Python?\n<|assistant|>\n", trained: false },
    { text: "A programming language.", trained: true },
    { text: "</s>", trained: true },
    { text: "\n", trained: false },
  ],
};

const result: TrainingPreview = {
  records: [record],
  summary: {
    records: 1, tokens: { min: 21, median: 21, p95: 21, max: 21 }, trainedTokens: { min: 6, median: 6, max: 6, total: 6 },
    cut: 0, lostTrainedTokens: 0, untrained: 0, errors: 0,
  },
  options: { trainOn: "last", trainTemplateText: false, maxSeqLength: 2048, maskPrompt: true },
};

test("the command asks for the record at the cursor of the open document", async () => {
  const { transport, sent, replies } = fakeTransport();
  replies.push(result);
  const token = { isCancellationRequested: false, onCancellationRequested: () => ({ dispose() {} }) };
  const rendered = await previewTraining(new CortexApi(transport), { model: "/m/tiny-llama", uri: "file:///d/train.jsonl", line: 2 },
    { source: "train.jsonl", modelName: "tiny-llama", token });
  assert.equal(sent.length, 1);
  assert.equal(sent[0].method, "cortex/trainingPreview");
  assert.deepEqual(sent[0].params, { model: "/m/tiny-llama", uri: "file:///d/train.jsonl", line: 2, limit: 1 });
  assert.equal(sent[0].token, token, "the progress notification's cancel reaches the request");
  assert.ok(rendered);
  assert.equal(rendered.header, "21 tokens, 6 trained, cut: no");

  // A file that is not synced goes as `dataset`; a config only when given.
  assert.deepEqual(trainingPreviewParams({ model: "m", dataset: "/d/x.csv", line: 0, config: {} }), { model: "m", dataset: "/d/x.csv", line: 0, limit: 1 });
  assert.deepEqual(trainingPreviewParams({ model: "m", uri: "u", dataset: "/ignored", line: 4, config: { trainOn: "all" } }),
    { model: "m", uri: "u", line: 4, limit: 1, config: { trainOn: "all" } });

  // No record there: undefined (the glue says so).
  replies.push({ ...result, records: [] });
  assert.equal(await previewTraining(new CortexApi(transport), { model: "m", uri: "u", line: 9 }), undefined);
});

test("the rendered document: header, source, the text with trained ranges, issues", () => {
  const rendered = renderPreview(record, { source: "train.jsonl", model: "tiny-llama", preview: result });
  const lines = rendered.text.split("\n");
  assert.equal(lines[0], "21 tokens, 6 trained, cut: no");
  assert.equal(lines[1], "train.jsonl, line 3 · model tiny-llama");
  assert.equal(lines[2], "trainOn: last · trainTemplateText: no · maxSeqLength: 2048");
  assert.equal(lines[4], TEXT_START);
  // The record's text is all there, in order, between the markers.
  const body = rendered.text.slice(rendered.text.indexOf(TEXT_START) + TEXT_START.length + 1, rendered.text.indexOf(TEXT_END));
  assert.equal(body, record.segments.map((s) => s.text).join(""));
  // Adjacent trained segments make one range; it covers exactly the trained text.
  assert.deepEqual(rendered.trained.map((r) => rendered.text.slice(r.start, r.end)), ["A programming language.</s>"]);
  assert.ok(rendered.text.includes("\nIssues (1):\n  warning [template-no-system] The template drops the system turn (turn 1)\n"), rendered.text);
  assert.ok(rendered.text.endsWith("\n"));
});

test("a cut record says so and how much training it loses; no issues, nothing trained", () => {
  const cut: TrainingPreviewRecord = {
    ...record, tokens: 2048, trainedTokens: 1500, truncated: true, lostTrainedTokens: 1, issues: [],
    segments: [{ text: "prompt ", trained: false }, { text: "answer", trained: true }, { text: " more", trained: false }, { text: "tail", trained: true }],
  };
  assert.equal(previewHeader(cut), "2,048 tokens, 1,500 trained, cut: yes (1 trained token lost)");
  assert.equal(previewHeader({ ...cut, lostTrainedTokens: 7 }), "2,048 tokens, 1,500 trained, cut: yes (7 trained tokens lost)");
  const rendered = renderPreview(cut, { preview: result });
  assert.equal(rendered.text.split("\n")[1], "line 3");
  assert.deepEqual(rendered.trained.map((r) => rendered.text.slice(r.start, r.end)), ["answer", "tail"]);
  assert.match(rendered.text, /\nCut at maxSeqLength 2,048: the text stops where the trainer cuts it/);
  assert.match(rendered.text, /\nNo issues\.\n$/);
  const untrained = renderPreview({ ...record, trainedTokens: 0, issues: [], segments: [{ text: "x", trained: false }] });
  assert.deepEqual(untrained.trained, []);
  assert.match(untrained.text, /nothing in this record is trained/);
  assert.equal(issueLine({ code: "c", severity: "error", message: "m" }), "error [c] m");
});

test("the record at the cursor: the one starting there, else the one before it", () => {
  const records = [0, 3, 7].map((line) => ({ ...record, line }));
  assert.equal(recordAt(records, 3)?.line, 3);
  assert.equal(recordAt(records, 5)?.line, 3);
  assert.equal(recordAt(records, 99)?.line, 7);
  assert.equal(recordAt([{ ...record, line: 4 }], 1)?.line, 4);
  assert.equal(recordAt([], 1), undefined);
});

test("the dataset status bar adds the total trained tokens when the summary has them", () => {
  const base = { uri: "file:///d/x.jsonl", text: "24 examples · chat · 0 problems" };
  assert.equal(datasetSummaryText(base), "Dataset: 24 examples · chat · 0 problems");
  assert.equal(datasetSummaryText({ ...base, trainedTokens: 12345 }), "Dataset: 24 examples · chat · 0 problems · 12,345 trained tokens");
  assert.equal(datasetSummaryText({ ...base, trainedTokens: { total: 1 } }), "Dataset: 24 examples · chat · 0 problems · 1 trained token");
  assert.equal(summaryTrainedTokens({ ...base, training: { trainedTokens: { min: 1, median: 2, max: 3, total: 40 } } }), 40);
  // The server's own line already says it: not twice.
  assert.equal(datasetSummaryText({ ...base, text: "24 examples · 900 trained tokens", trainedTokens: 900 }), "Dataset: 24 examples · 900 trained tokens");
});

// -- The real server, once it has cortex/trainingPreview --------------------------------------

let fixture: Fixture | undefined;
let session: Awaited<ReturnType<typeof startServer>> | undefined;

before(async () => {
  fixture = makeFixture("preview");
  session = await startServer(fixture);
});

after(async () => {
  await session?.close();
  if (fixture) removeFixture(fixture);
});

test("the server previews an open document's record with the tiny model", async (t) => {
  if (!session!.methods.includes("cortex/trainingPreview")) return t.skip("cortex/trainingPreview not in this server yet");
  const uri = pathToFileURL(path.join(fixture!.root, "preview.jsonl")).href;
  const text = ['{"prompt": "What is Python?", "response": "A programming language."}', '{"prompt": "What is MLX?", "response": "An array framework."}', ""].join("\n");
  await session!.connection.sendNotification("textDocument/didOpen", { textDocument: { uri, languageId: "jsonl", version: 1, text } });
  const rendered = await previewTraining(session!.api, { model: fixture!.modelPath, uri, line: 1 }, { source: "preview.jsonl" });
  assert.ok(rendered, "a record at line 2");
  assert.equal(rendered.record.line, 1);
  assert.match(rendered.header, /^\d+ tokens, \d+ trained, cut: (yes|no)/);
  assert.ok(rendered.record.tokens > 0 && rendered.record.trainedTokens > 0, JSON.stringify(rendered.record));
  const trainedText = rendered.trained.map((r) => rendered.text.slice(r.start, r.end)).join("");
  assert.ok(trainedText.includes("An array framework"), trainedText);
  assert.ok(!trainedText.includes("What is MLX?"), "the prompt is not trained by default");
});
