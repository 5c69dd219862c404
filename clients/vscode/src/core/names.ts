// Model name rules, the same as the server's (cortex_rpc/paths.py), so the name step can say
// what is wrong while the user types. The server checks again. No `vscode` import here.

export const MAX_NAME_LENGTH = 96;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const RESERVED = new Set(["con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "lpt1", "lpt2", "lpt3",
  "jobs", "tmp", "models", "mlx_models", "cache"]);

/** Return why `name` cannot name a fine-tuned model, or undefined when it can. */
export function nameProblem(name: string, taken: Iterable<string> = []): string | undefined {
  if (!name) return "Enter a name";
  if (name.length > MAX_NAME_LENGTH) return `The name is ${name.length} characters long; use at most ${MAX_NAME_LENGTH}`;
  if (/[\\/\0]/.test(name) || name.includes("..")) return "Use a plain name, not a path (no '/', '\\' or '..')";
  if (!NAME_PATTERN.test(name)) return "Use only letters, digits, '.', '_' and '-', starting with a letter or digit";
  if (RESERVED.has(name.toLowerCase().split(".")[0])) return `'${name}' is a reserved name; choose another`;
  if (new Set(taken).has(name)) return `A model named '${name}' already exists`;
  return undefined;
}

/** `BASE-custom`, or `BASE-custom-2`... when taken; `ORG/NAME` (a hub repo id) gives `NAME-custom`. */
export function suggestModelName(base: string, taken: Iterable<string> = []): string {
  const cleaned = (base.replace(/\/+$/, "").split("/").pop() ?? "").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[.\-_]+|[.\-_]+$/g, "") || "model";
  const suggestion = `${cleaned.slice(0, MAX_NAME_LENGTH - 7)}-custom`;
  const used = new Set(taken);
  let candidate = suggestion;
  for (let n = 2; used.has(candidate) && n < 100; n++) candidate = `${suggestion}-${n}`;
  return candidate;
}
