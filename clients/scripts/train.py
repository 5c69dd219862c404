#!/usr/bin/env python3
"""Validate a dataset and fine-tune a model through cortex-rpc, with raw JSON-RPC over stdio.

Standard library only: proof that any tool can drive the server. Usage:

    python3 train.py MODEL DATASET NAME [--preset quick] [--iterations N] [--server cortex-rpc]
"""

import argparse
import json
import subprocess
import sys

# The job states after which no more progress comes (cortex_rpc.training.contract).
TERMINAL = ("completed", "failed", "cancelled", "interrupted")


class Server:
    """cortex-rpc as a child process, spoken to with Content-Length framed JSON-RPC."""

    def __init__(self, command):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.next_id = 0

    def send(self, message):
        body = json.dumps(message).encode("utf-8")
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.proc.stdin.flush()

    def receive(self):
        length = None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit("cortex-rpc exited")
            if line == b"\r\n":
                break
            name, _, value = line.decode("ascii").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return json.loads(self.proc.stdout.read(length))

    def notify(self, method, params=None):
        self.send({"jsonrpc": "2.0", "method": method, "params": params or {}})

    def request(self, method, params=None, on_notification=None):
        """Send a request; hand notifications that arrive meanwhile to on_notification."""
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})
        while True:
            message = self.receive()
            if "method" in message:
                if "id" in message:  # a request from the server (e.g. workDoneProgress/create)
                    self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
                elif on_notification:
                    on_notification(message)
                continue
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise SystemExit(f"{method} failed: {message['error']['message']}")
                return message["result"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("name")
    parser.add_argument("--preset", default="quick", choices=["quick", "balanced", "quality"])
    parser.add_argument("--iterations", type=int, help="override the proposed iteration count")
    parser.add_argument("--server", default="cortex-rpc", help="the cortex-rpc command")
    args = parser.parse_args()

    server = Server([args.server])
    server.request("initialize", {"processId": None, "capabilities": {}})
    server.notify("initialized")

    report = server.request("cortex/validateDataset", {"path": args.dataset})
    for d in report["diagnostics"]:
        kind = "error" if d["severity"] == 1 else "warning"
        print(
            f"{args.dataset}:{d['range']['start']['line'] + 1}: {kind} [{d['code']}] {d['message']}"
        )
    if not report["ok"]:
        raise SystemExit("dataset has errors")
    print(f"Dataset validated: {report['examples']} examples")

    events = []
    params = {
        "model": args.model,
        "dataset": args.dataset,
        "outputName": args.name,
        "preset": args.preset,
    }
    if args.iterations:
        params["config"] = {"iterations": args.iterations}
    job = server.request("cortex/startTraining", params, on_notification=events.append)
    print(f"Job {job['jobId']}: {job['config']['iterations']} iterations -> {job['outputPath']}")

    final = None
    while final is None:
        message = events.pop(0) if events else server.receive()
        if message.get("method") != "cortex/trainingProgress":
            continue
        p = message["params"]
        if p["jobId"] != job["jobId"]:
            continue
        if p.get("event") == "progress":
            print(
                f"  step {p['iteration']}/{p['totalIterations']}  loss {p['trainLoss']:.4f}"
                f"  {p.get('tokensPerSecond', 0):.0f} tok/s",
                flush=True,
            )
        if p["state"] in TERMINAL:
            final = p

    server.request("shutdown")
    server.notify("exit")
    server.proc.wait(timeout=30)
    if final["state"] != "completed":
        raise SystemExit(f"training {final['state']}: {final.get('message', '')}")
    print(f"Completed: {final['outputPath']} (adapter {final.get('adapterBytes', 0)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
