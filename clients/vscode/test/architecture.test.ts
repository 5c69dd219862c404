// The split the issue asks for: protocol code never imports `vscode`; every contributed
// command is registered by the glue.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

const ROOT = path.resolve(__dirname, "..", "..");

test("core modules do not import vscode", () => {
  const dir = path.join(ROOT, "src", "core");
  const files = fs.readdirSync(dir).filter((f) => f.endsWith(".ts"));
  assert.ok(files.length >= 5);
  for (const file of files) {
    const text = fs.readFileSync(path.join(dir, file), "utf8");
    assert.doesNotMatch(text, /from\s+["']vscode["']|require\(["']vscode["']\)|from\s+["']vscode-languageclient/, file);
  }
});

test("every contributed command is registered, and settings are declared", () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
  const glue = fs.readFileSync(path.join(ROOT, "src", "extension.ts"), "utf8");
  const commands: { command: string; title: string }[] = manifest.contributes.commands;
  assert.deepEqual(commands.map((c) => c.title).sort(), [
    "Cancel Training", "Compare Adapters", "Dataset Quality Report",
    "Export Model (Ollama, GGUF, LM Studio, Hugging Face, MLX)", "Fine-Tune Model…", "GPU Status",
    "Preview Training Text", "Show Models", "Validate Dataset",
  ]);
  for (const { command } of commands) assert.ok(glue.includes(`"${command}"`), command);
  // Menu entries name contributed commands only.
  const known = new Set(commands.map((c) => c.command));
  for (const [menu, entries] of Object.entries(manifest.contributes.menus ?? {})) {
    for (const entry of entries as { command: string }[]) assert.ok(known.has(entry.command), `${menu}: ${entry.command}`);
  }
  const settings = Object.keys(manifest.contributes.configuration.properties);
  for (const key of ["cortex.serverPath", "cortex.modelDirs", "cortex.home", "cortex.model"]) assert.ok(settings.includes(key), key);
  // The model goes to the server at start and on change (no restart).
  assert.match(glue, /model: configuredModel\(\)/);
  assert.match(glue, /"workspace\/didChangeConfiguration", \{ settings: \{ cortex: \{ model:/);
  assert.ok(manifest.contributes.languages.some((l: { id: string; extensions: string[] }) => l.id === "jsonl" && l.extensions.includes(".jsonl")));
});
