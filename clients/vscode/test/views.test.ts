// The two views (Compare Adapters, Dataset Quality Report): their pure parts, and the request
// wrappers over a fake transport. No server, no editor.
import assert from "node:assert/strict";
import { test } from "node:test";
import { CortexApi, isCancelled, REQUEST_CANCELLED, type CancellationLike, type RpcTransport } from "../src/core/api";
import { baseModelChoices, datasetPrompts, joinPrompts, promptsProblem, splitPrompts } from "../src/core/compare";
import {
  compareAdaptersHtml, compareAdaptersMarkdown, comparisonColumns, datasetFixLines, datasetReportTitle, escapeHtml,
  evaluationLines, isDatasetFile, lossCurveHtml, markdownCell, WEBVIEW_CSP, withContentSecurityPolicy,
} from "../src/core/format";
import type { AdapterComparison, ModelEntry } from "../src/core/types";

const comparison: AdapterComparison = {
  baseModel: "/home/me/models/tiny-llama",
  rows: [
    {
      prompt: "What is a | pipe?",
      outputs: [
        { model: "base", text: "Line one\nLine two", tokens: 4 },
        { model: "tiny-support", text: "<script>alert(1)</script> & `code`", tokens: 1 },
      ],
    },
    { prompt: "Empty?", outputs: [{ model: "base", text: "  ", tokens: 0 }, { model: "tiny-support", text: "a\\|b", tokens: 2 }] },
  ],
};

const META = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`.replace(/'/g, "&#39;");

test("markdown cells escape pipes, backslashes, backticks, HTML and newlines", () => {
  assert.equal(markdownCell("a | b"), "a \\| b");
  assert.equal(markdownCell("x\ny\r\nz"), "x<br>y<br>z");
  assert.equal(markdownCell("<b>&</b>"), "&lt;b&gt;&amp;&lt;/b&gt;");
  assert.equal(markdownCell("`a|b`"), "\\`a\\|b\\`");
  assert.equal(markdownCell("C:\\dir"), "C:\\\\dir");
  assert.equal(markdownCell("   "), "*(empty)*");
  assert.equal(escapeHtml(`"it's"`), "&quot;it&#39;s&quot;");
});

test("compareAdaptersMarkdown: a row per prompt, base first, every cell escaped", () => {
  const markdown = compareAdaptersMarkdown(comparison, { maxTokens: 8 });
  const lines = markdown.trimEnd().split("\n");
  assert.equal(lines[0], "# Adapter comparison");
  assert.equal(lines[2], "Base model: `/home/me/models/tiny-llama` · 2 prompts · 1 adapter · up to 8 tokens");
  assert.equal(lines[4], "| Prompt | base (tiny-llama) | tiny-support |");
  assert.equal(lines[5], "| --- | --- | --- |");
  assert.equal(lines[6], "| What is a \\| pipe? | Line one<br>Line two<br><sub>4 tokens</sub> | " +
    "&lt;script&gt;alert(1)&lt;/script&gt; &amp; \\`code\\`<br><sub>1 token</sub> |");
  assert.equal(lines[7], "| Empty? | *(empty)*<br><sub>0 tokens</sub> | a\\\\\\|b<br><sub>2 tokens</sub> |");
  assert.equal(lines.length, 8);
  // Every table line has the same number of unescaped pipes: 4 (3 columns).
  for (const line of lines.slice(4)) assert.equal(line.replace(/\\\\/g, "").replace(/\\\|/g, "").split("|").length - 1, 4, line);
  assert.doesNotMatch(markdown, /<script>/);
});

test("compareAdaptersHtml: a table under a strict CSP, text escaped, newlines kept", () => {
  const html = compareAdaptersHtml(comparison);
  assert.ok(html.startsWith("<!DOCTYPE html>"));
  assert.ok(html.includes(`<head>${META}<meta charset="utf-8">`), "the CSP is the first thing in <head>");
  assert.equal(html.match(/<tr>/g)?.length, 3);
  assert.ok(html.includes("<th>Prompt</th><th>base (tiny-llama)</th><th>tiny-support</th>"));
  assert.ok(html.includes(`<td class="prompt">What is a | pipe?</td><td>Line one\nLine two<span class="tokens">4 tokens</span></td>`));
  assert.ok(html.includes("&lt;script&gt;alert(1)&lt;/script&gt; &amp; `code`"));
  assert.ok(html.includes(`<span class="empty">(empty)</span>`));
  assert.doesNotMatch(html, /<script/i);
  assert.deepEqual(comparisonColumns({ baseModel: "/m/x/", rows: [] }), []);
  assert.deepEqual(comparisonColumns({ baseModel: "/m/x/", rows: [{ prompt: "p", outputs: [{ model: "base", text: "", tokens: 0 }] }] }), ["base (x)"]);
});

test("withContentSecurityPolicy puts the meta first in <head>, or builds a document", () => {
  assert.equal(withContentSecurityPolicy("<!DOCTYPE html><html><HEAD lang=x><title>t</title></HEAD><body>b</body></html>"),
    `<!DOCTYPE html><html><HEAD lang=x>${META}<title>t</title></HEAD><body>b</body></html>`);
  // <header> is not <head>; a <head> in a comment does not count.
  assert.equal(withContentSecurityPolicy("<html><!-- <head> --><body><header>h</header></body></html>"),
    `<html><head>${META}</head><!-- <head> --><body><header>h</header></body></html>`);
  const fragment = withContentSecurityPolicy("<h1>Report</h1><p>x</p>");
  assert.equal(fragment, `<!DOCTYPE html>\n<html><head>${META}<meta charset="utf-8"></head><body><h1>Report</h1><p>x</p></body></html>\n`);
  // A <body> before any <head>: wrapped, so the policy still comes first.
  assert.ok(withContentSecurityPolicy("<body><head></head></body>").startsWith(`<!DOCTYPE html>\n<html><head>${META}`));
  assert.ok(withContentSecurityPolicy("", "default-src 'none'").includes(`content="default-src &#39;none&#39;"`));
  assert.equal(WEBVIEW_CSP, "default-src 'none'; style-src 'unsafe-inline'");
});

test("dataset report title and fix lines", () => {
  assert.equal(datasetReportTitle("/data/train.jsonl", 87), "Dataset report — train.jsonl (score 87)");
  assert.equal(datasetReportTitle("C:\\data\\train.csv", 72.46), "Dataset report — train.csv (score 72.5)");
  assert.equal(datasetReportTitle("x.txt", Number.NaN), "Dataset report — x.txt (score ?)");
  assert.deepEqual(datasetFixLines([
    { code: "near-duplicates", title: "Remove near-duplicates", detail: "", count: 3, lines: [4, 9, 12] },
    { code: "empty-response", title: "Fill empty responses", detail: "", count: 1, lines: [7] },
    { code: "too-long", title: "Shorten", detail: "", count: 12, lines: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
    { code: "few-examples", title: "Add examples", detail: "", count: 1, lines: [] },
  ]), [
    "near-duplicates: Remove near-duplicates (3 occurrences; lines 4, 9, 12)",
    "empty-response: Fill empty responses (1 occurrence; line 7)",
    "too-long: Shorten (12 occurrences; lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, …)",
    "few-examples: Add examples (1 occurrence)",
  ]);
  assert.ok(isDatasetFile("/a/b.JSONL") && isDatasetFile("c.csv") && !isDatasetFile("d.py"));
});

test("prompts: split on ;; or newlines, joined back for the input box, limits checked", () => {
  assert.deepEqual(splitPrompts("What is Git? ;; Explain LoRA;;;;  \n  Third\r\nFourth "), ["What is Git?", "Explain LoRA", "Third", "Fourth"]);
  assert.deepEqual(splitPrompts(" ;; "), []);
  assert.equal(joinPrompts(["a\nb", "c", " "]), "a b ;; c");
  assert.match(promptsProblem([])!, /at least one prompt/);
  assert.match(promptsProblem(Array(33).fill("p"))!, /at most 32/);
  assert.match(promptsProblem(["ok", "x".repeat(20001)])!, /Prompt 2 has 20001 characters/);
  assert.equal(promptsProblem(["ok"]), undefined);
});

test("base model choices: last used first, then bases with adapters, unlisted bases added", () => {
  const models: ModelEntry[] = [
    { name: "alpha", path: "/m/alpha", kind: "base" },
    { name: "tiny", path: "/m/tiny", kind: "base" },
    { name: "broken", path: "/m/broken", kind: "base", error: "bad config" },
    { name: "tiny-a", path: "/h/tiny-a", kind: "fine-tuned", baseModel: "/m/tiny" },
    { name: "tiny-b", path: "/h/tiny-b", kind: "fine-tuned", baseModel: "/m/tiny/" },
    { name: "other-a", path: "/h/other-a", kind: "fine-tuned", baseModel: "/elsewhere/other" },
    { name: "zeta", path: "/m/zeta", kind: "base" },
  ];
  assert.deepEqual(baseModelChoices(models, "/m/zeta").map((c) => [c.name, c.adapters, c.last]),
    [["zeta", 0, true], ["tiny", 2, false], ["other", 1, false], ["alpha", 0, false]]);
  assert.deepEqual(baseModelChoices(models).map((c) => c.path), ["/m/tiny", "/elsewhere/other", "/m/alpha", "/m/zeta"]);
});

test("dataset prompts: the first three user turns of JSONL or a JSON array", () => {
  const jsonl = [
    '{"prompt": "What is Git?", "response": "A VCS."}',
    "not json",
    "",
    '{"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
    '{"text": "no prompt here"}',
    '{"instruction": "Translate", "input": "chat", "output": "cat"}',
    '{"question": "Fourth?", "answer": "yes"}',
  ].join("\n");
  assert.deepEqual(datasetPrompts(jsonl), ["What is Git?", "Hi", "Translate\n\nchat"]);
  assert.deepEqual(datasetPrompts(jsonl, 10), ["What is Git?", "Hi", "Translate\n\nchat", "Fourth?"]);
  assert.deepEqual(datasetPrompts('[{"conversations": [{"from": "human", "value": "Q1"}]}, {"prompt": "Q2", "completion": "A"}]'), ["Q1", "Q2"]);
  assert.deepEqual(datasetPrompts("prompt,response\nWhat,That\n"), []);
  assert.deepEqual(datasetPrompts("[broken"), []);
});

/** A transport whose replies the test controls; it records what was sent. */
function fakeTransport() {
  const sent: { method: string; params: unknown; token?: CancellationLike }[] = [];
  const pending: { resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  const transport: RpcTransport = {
    sendRequest(method, params, token) {
      sent.push({ method, params, token });
      return new Promise((resolve, reject) => pending.push({ resolve, reject }));
    },
    onNotification: () => ({ dispose() {} }),
    onProgress: () => ({ dispose() {} }),
  };
  return { transport, sent, pending };
}

/** A minimal cancellation source with the shape of vscode's and vscode-jsonrpc's tokens. */
function tokenSource() {
  const listeners = new Set<(e: unknown) => unknown>();
  const token = {
    isCancellationRequested: false,
    onCancellationRequested(listener: (e: unknown) => unknown) {
      listeners.add(listener);
      return { dispose: () => listeners.delete(listener) };
    },
  };
  return { token, listeners, cancel() { token.isCancellationRequested = true; for (const l of [...listeners]) l(undefined); } };
}

test("wrappers send listAdapters, compareAdapters and datasetReport with their params", async () => {
  const { transport, sent, pending } = fakeTransport();
  const api = new CortexApi(transport);
  const listed = api.listAdapters("/m/tiny");
  pending[0].resolve({ baseModel: "/m/tiny", adapters: [{ name: "tiny-a", path: "/h/tiny-a" }] });
  assert.deepEqual((await listed).map((a) => a.name), ["tiny-a"]);
  const compared = api.compareAdapters({ baseModel: "/m/tiny", adapters: ["/h/tiny-a"], prompts: ["p"], maxTokens: undefined });
  pending[1].resolve(comparison);
  assert.equal(await compared, comparison);
  const reported = api.datasetReport("/d/train.jsonl");
  pending[2].resolve({ score: 90, markdown: "", html: "", fixes: [] });
  assert.equal((await reported).score, 90);
  assert.deepEqual(sent.map((s) => [s.method, s.params]), [
    ["cortex/listAdapters", { baseModel: "/m/tiny" }],
    ["cortex/compareAdapters", { baseModel: "/m/tiny", adapters: ["/h/tiny-a"], prompts: ["p"] }],
    ["cortex/datasetReport", { path: "/d/train.jsonl", format: "html" }],
  ]);
  assert.equal(sent[1].token, undefined);
});

test("cancelling a request's token rejects it at once with RequestCancelled", async () => {
  const { transport, sent, pending } = fakeTransport();
  const api = new CortexApi(transport);
  const source = tokenSource();
  const request = api.datasetReport("/d/x.jsonl", "/m/tiny", source.token);
  assert.equal(sent[0].token, source.token, "the token reaches the transport (which sends $/cancelRequest)");
  assert.deepEqual(sent[0].params, { path: "/d/x.jsonl", model: "/m/tiny", format: "html" });
  source.cancel();
  await assert.rejects(request, (error: unknown) => {
    assert.ok(isCancelled(error));
    assert.equal((error as { code: number }).code, REQUEST_CANCELLED);
    return true;
  });
  pending[0].resolve({ score: 1 }); // a late reply is ignored
  assert.equal(source.listeners.size, 0, "the cancellation listener is removed");

  // Already cancelled: nothing is sent.
  await assert.rejects(api.compareAdapters({ baseModel: "b", adapters: ["a"], prompts: ["p"] }, source.token), isCancelled);
  assert.equal(sent.length, 1);

  // Not cancelled: errors keep their code and data; the listener is removed too.
  const other = tokenSource();
  const failing = api.compareAdapters({ baseModel: "b", adapters: ["a"], prompts: ["p"] }, other.token);
  pending[1].reject({ message: "No model named 'b'", code: -32000, data: { code: "model-not-found" } });
  await assert.rejects(failing, (error: { code: number; data?: { code?: string } }) => error.code === -32000 && error.data?.code === "model-not-found");
  assert.equal(other.listeners.size, 0);
  assert.equal(isCancelled(new Error("x")), false);
});

test("the result step shows evaluation and the loss curve when the job recorded them", () => {
  const done = {
    jobId: "j", state: "completed", outputPath: "/m/x", lossCurvePath: "/m/x/loss-curve.svg",
    evaluation: { baseValLoss: 7.7581, valLoss: 6.5392, basePerplexity: 2340.94, perplexity: 691.88 },
  } as const;
  assert.deepEqual(evaluationLines(done as never), [
    "Validation perplexity: 2340.9 -> 691.9 (loss 7.758 -> 6.539)",
    "Loss curve: /m/x/loss-curve.svg",
  ]);
  assert.deepEqual(evaluationLines({ jobId: "j", state: "completed", evaluation: null } as never), []);
});

test("the loss-curve page embeds our SVG under the CSP and refuses anything else", () => {
  const page = lossCurveHtml("Loss <curve>", `<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0"/></svg>`);
  assert.ok(page.includes(META), page);
  assert.ok(page.includes("<svg xmlns") && !page.includes("<?xml"));
  assert.ok(page.includes("Loss &lt;curve&gt;"));
  const other = lossCurveHtml("x", "<html><script>alert(1)</script></html>");
  assert.ok(!other.includes("<script>") && other.includes("Not an SVG file."));
});
