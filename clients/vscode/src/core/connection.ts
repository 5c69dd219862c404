// Start cortex-rpc over stdio with vscode-jsonrpc and no editor: used by the tests and by
// anyone scripting the extension's protocol code from node. No `vscode` import here.

import { spawn, type ChildProcess } from "child_process";
import {
  createMessageConnection, ProgressType, StreamMessageReader, StreamMessageWriter, type CancellationToken,
  type MessageConnection,
} from "vscode-jsonrpc/node";
import { CortexApi, type RpcTransport } from "./api";

export interface StartOptions {
  /** The server command (default `cortex-rpc` on PATH). */
  command?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Sent as initializationOptions: `modelDirs`, `cortexHome`, ... */
  initializationOptions?: Record<string, unknown>;
  /** Called with each line the server writes to stderr. */
  onStderr?: (text: string) => void;
}

export interface CortexSession {
  api: CortexApi;
  connection: MessageConnection;
  process: ChildProcess;
  initializeResult: { capabilities: any; serverInfo?: { name: string; version?: string } };
  /** The server's custom methods (`capabilities.experimental.cortex.methods`). */
  methods: string[];
  /** shutdown + exit; resolves with the server's exit code. */
  close(): Promise<number | null>;
}

/** Adapt a vscode-jsonrpc connection to the RpcTransport the API uses. */
export function transportFor(connection: MessageConnection): RpcTransport {
  const progress = new ProgressType<any>();
  return {
    // vscode-jsonrpc takes a trailing CancellationToken; an `undefined` there would be sent
    // as a second positional parameter, so pass it only when there is one.
    sendRequest: (method, params, token) => (token
      ? connection.sendRequest(method, params, token as CancellationToken)
      : connection.sendRequest(method, params)),
    onNotification: (method, handler) => connection.onNotification(method, handler),
    onProgress: (token, handler) => connection.onProgress(progress, token, handler),
  };
}

/** Spawn the server, run `initialize`/`initialized`, and return a ready API. */
export async function startCortex(options: StartOptions = {}): Promise<CortexSession> {
  const child = spawn(options.command ?? "cortex-rpc", options.args ?? [], {
    env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"],
  });
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (text: string) => options.onStderr?.(text));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const spawnError = new Promise<never>((_, reject) => child.on("error", reject));
  const connection = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
  // The server asks the client to create a token when none was given and the client says it
  // supports work-done progress: accept it.
  connection.onRequest("window/workDoneProgress/create", () => null);
  connection.onNotification("window/logMessage", () => undefined);
  connection.listen();
  const initializeResult: any = await Promise.race([spawnError, connection.sendRequest("initialize", {
    processId: process.pid,
    clientInfo: { name: "cortex-node" },
    rootUri: null,
    capabilities: {
      window: { workDoneProgress: true },
      textDocument: { publishDiagnostics: { relatedInformation: false }, synchronization: { dynamicRegistration: false } },
    },
    initializationOptions: options.initializationOptions ?? {},
  })]);
  await connection.sendNotification("initialized", {});
  const api = new CortexApi(transportFor(connection));
  let closed: Promise<number | null> | undefined;
  return {
    api, connection, process: child, initializeResult,
    methods: initializeResult?.capabilities?.experimental?.cortex?.methods ?? [],
    close() {
      closed ??= (async () => {
        try {
          await Promise.race([connection.sendRequest("shutdown"), new Promise((r) => setTimeout(r, 5000))]);
          await connection.sendNotification("exit");
        } catch {
          // already gone
        }
        const timer = setTimeout(() => child.kill("SIGTERM"), 10000);
        const code = await exited;
        clearTimeout(timer);
        api.dispose();
        connection.dispose();
        return code;
      })();
      return closed;
    },
  };
}
