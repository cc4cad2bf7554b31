// The snippets the docs tell a newcomer to paste, run as written against a live server (only
// the API key and address are filled in): the README's Python quick start (stubs generated
// into target/py-stubs, the snippet run from another directory), docs/grpc-api.md's Node
// snippet (which must load the proto without proto-loader's "not found in any of the include
// paths" warning) and its HTTP JSON API examples (curl, Python's urllib, Node's fetch). A
// WebSocket client checks each one's message arrived.
// The README step is run as written, with the virtual environment it makes in target/py-venv.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { RealtimeClient } from "../realtime.js";
import { startServer, until } from "../test/harness.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
let server;
before(async () => {
  server = await startServer();
});
after(() => server.stop());

/** The fenced blocks of `lang` in a markdown file, after the line containing `after`. */
function blocks(file, lang, after) {
  const text = fs.readFileSync(path.join(root, file), "utf8");
  const from = text.indexOf(after);
  assert.ok(from >= 0, `${file} has ${after}`);
  const re = new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g");
  return [...text.slice(from).matchAll(re)].map((m) => m[1]);
}

/** Runs a command; resolves with its output when it exits, or after `killAfterMs`. */
function run(cmd, args, { cwd = root, env = {}, killAfterMs = 60000 } = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill(), killAfterMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function fill(snippet) {
  return snippet
    .replaceAll("PASTE_API_KEY", server.apiKey)
    .replaceAll("YOUR_API_KEY", server.apiKey)
    .replaceAll("127.0.0.1:50051", server.grpcAddr)
    .replaceAll("127.0.0.1:8080", new URL(server.ws).host);
}

async function listener(user, roles = []) {
  const c = new RealtimeClient(server.ws, { WebSocket, token: server.token(user, { roles }) });
  const got = [];
  c.on("message", (m) => got.push([m.type, m.payload]));
  c.connect();
  await until("connected", () => c.state === "connected");
  return { c, got };
}

test("the README's Python quick start works as written, from any directory", async () => {
  // As written: a virtual environment in target/py-venv (the test run made it already, with
  // the same packages, so pip finds them installed), the stubs in target/py-stubs, and the
  // snippet run by the environment's python.
  const python = path.join(root, "target/py-venv/bin/python");
  const [generate] = blocks("README.md", "sh", "**3. Push to it from a backend.**");
  const [snippet] = blocks("README.md", "python", "**3. Push to it from a backend.**");
  fs.rmSync(path.join(root, "target/py-stubs"), { recursive: true, force: true });
  const gen = await run("bash", ["-euc", generate], {});
  assert.equal(gen.code, 0, gen.stderr);
  assert.ok(!fs.existsSync(path.join(root, "boundary")), "nothing generated at the repository root");
  const { c, got } = await listener("dev-user");
  const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), "readme-"));
  const out = await run(python, ["-c", fill(snippet)], {
    cwd: elsewhere,
    env: { PYTHONPATH: path.join(root, "target/py-stubs") },
  });
  assert.equal(out.code, 0, out.stderr);
  await until("the message", () => got.length === 1);
  assert.deepEqual(got, [["order.updated", { id: 42, status: "paid" }]]);
  c.close();
});

test("docs/grpc-api.md's Node snippet loads the proto without warnings and sends", async () => {
  const [snippet] = blocks("docs/grpc-api.md", "js", "npm install @grpc/grpc-js @grpc/proto-loader");
  assert.match(snippet, /loadSync/);
  const { c, got } = await listener("docs-admin", ["admin"]);
  // Next to examples/node so its imports resolve from that package's node_modules.
  const file = path.join(root, "examples/node/.docs-snippet.mjs");
  fs.writeFileSync(file, fill(snippet));
  try {
    // The snippet keeps a WatchEvents stream open: stop it once the message has arrived.
    const running = run(process.execPath, [file], { killAfterMs: 4000 });
    await until("the alert", () => got.length === 1);
    const out = await running;
    assert.deepEqual(got, [["alert", { level: "high" }]]);
    assert.doesNotMatch(out.stderr, /include paths/);
    assert.match(out.stdout, /\S+ 1\n/, "it printed the message id and 1 connection");
  } finally {
    fs.rmSync(file, { force: true });
    c.close();
  }
});

test("docs/grpc-api.md's HTTP JSON API examples (curl, Python's urllib, Node's fetch) send", async () => {
  const [curl] = blocks("docs/grpc-api.md", "sh", "## HTTP JSON API");
  const [python] = blocks("docs/grpc-api.md", "python", "## HTTP JSON API");
  const [js] = blocks("docs/grpc-api.md", "js", "## HTTP JSON API");
  const { c, got } = await listener("alice");
  try {
    const viaCurl = await run("bash", ["-euc", fill(curl)]);
    assert.equal(viaCurl.code, 0, viaCurl.stderr);
    assert.equal(JSON.parse(viaCurl.stdout).connections, 1, viaCurl.stdout);
    const viaPython = await run("python3", ["-c", fill(python)]);
    assert.equal(viaPython.code, 0, viaPython.stderr);
    assert.match(viaPython.stdout, /\S+ 1\n/, "it printed the message id and 1 connection");
    const file = path.join(os.tmpdir(), `http-api-${process.pid}.mjs`);
    fs.writeFileSync(file, fill(js));
    try {
      const viaNode = await run(process.execPath, [file]);
      assert.equal(viaNode.code, 0, viaNode.stderr);
      assert.match(viaNode.stdout, /\S+ 1\n/);
    } finally {
      fs.rmSync(file, { force: true });
    }
    await until("three messages", () => got.length === 3);
    assert.deepEqual(got, Array(3).fill(["order.updated", { id: 42 }]));
  } finally {
    c.close();
  }
});
