#!/usr/bin/env node
// Validate a dataset and fine-tune a model through cortex-rpc, with raw JSON-RPC over stdio.
// Node only, no packages. Usage:
//   node train.mjs MODEL DATASET NAME [--preset quick] [--iterations N] [--server cortex-rpc]
import { spawn } from "node:child_process";

const [model, dataset, name, ...rest] = process.argv.slice(2);
if (!name) {
  console.error("usage: node train.mjs MODEL DATASET NAME [--preset quick] [--iterations N] [--server cortex-rpc]");
  process.exit(2);
}
const option = (flag, fallback) => (rest.includes(flag) ? rest[rest.indexOf(flag) + 1] : fallback);

const server = spawn(option("--server", "cortex-rpc"), [], { stdio: ["pipe", "pipe", "inherit"] });
server.on("error", (error) => { console.error(`cannot start the server: ${error.message}`); process.exit(1); });
let buffer = Buffer.alloc(0);
let nextId = 0;
const pending = new Map();
const listeners = [];

// Content-Length framing: headers, a blank line, then exactly that many bytes of JSON.
server.stdout.on("data", (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  for (;;) {
    const end = buffer.indexOf("\r\n\r\n");
    if (end < 0) return;
    const length = Number(/content-length:\s*(\d+)/i.exec(buffer.subarray(0, end).toString("ascii"))[1]);
    if (buffer.length < end + 4 + length) return;
    const message = JSON.parse(buffer.subarray(end + 4, end + 4 + length).toString("utf8"));
    buffer = buffer.subarray(end + 4 + length);
    if (message.method && message.id !== undefined) send({ jsonrpc: "2.0", id: message.id, result: null });
    else if (message.method) listeners.forEach((listener) => listener(message));
    else pending.get(message.id)?.(message);
  }
});

function send(message) {
  const body = Buffer.from(JSON.stringify(message), "utf8");
  server.stdin.write(`Content-Length: ${body.length}\r\n\r\n`);
  server.stdin.write(body);
}

function request(method, params = {}) {
  const id = ++nextId;
  send({ jsonrpc: "2.0", id, method, params });
  return new Promise((resolve, reject) => pending.set(id, (message) => {
    pending.delete(id);
    if (message.error) reject(new Error(`${method} failed: ${message.error.message}`));
    else resolve(message.result);
  }));
}

const TERMINAL = ["completed", "failed", "cancelled", "interrupted"];
try {
  await request("initialize", { processId: process.pid, capabilities: {} });
  send({ jsonrpc: "2.0", method: "initialized", params: {} });

  const report = await request("cortex/validateDataset", { path: dataset });
  for (const d of report.diagnostics) {
    console.log(`${dataset}:${d.range.start.line + 1}: ${d.severity === 1 ? "error" : "warning"} [${d.code}] ${d.message}`);
  }
  if (!report.ok) throw new Error("dataset has errors");
  console.log(`Dataset validated: ${report.examples} examples`);

  // Listen before starting: the first events may arrive before the reply.
  const events = [];
  let wake = () => {};
  listeners.push((message) => { if (message.method === "cortex/trainingProgress") { events.push(message.params); wake(); } });
  const params = { model, dataset, outputName: name, preset: option("--preset", "quick") };
  if (option("--iterations")) params.config = { iterations: Number(option("--iterations")) };
  const job = await request("cortex/startTraining", params);
  console.log(`Job ${job.jobId}: ${job.config.iterations} iterations -> ${job.outputPath}`);

  let final;
  while (!final) {
    if (!events.length) await new Promise((resolve) => { wake = resolve; });
    const p = events.shift();
    if (!p || p.jobId !== job.jobId) continue;
    if (p.event === "progress") {
      console.log(`  step ${p.iteration}/${p.totalIterations}  loss ${p.trainLoss.toFixed(4)}  ${Math.round(p.tokensPerSecond ?? 0)} tok/s`);
    }
    if (TERMINAL.includes(p.state)) final = p;
  }
  await request("shutdown");
  send({ jsonrpc: "2.0", method: "exit" });
  if (final.state !== "completed") throw new Error(`training ${final.state}: ${final.message ?? ""}`);
  console.log(`Completed: ${final.outputPath} (adapter ${final.adapterBytes ?? 0} bytes)`);
} catch (error) {
  console.error(error.message);
  server.kill();
  process.exit(1);
}
