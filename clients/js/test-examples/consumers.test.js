// The consumer examples against a live server (docs/consumers.md): examples/python/outbox_job.py
// commits an order's change with its notification in the outbox (and rolls another back), and
// examples/node/stream_job.js adds a notification to a Redis stream; the server, configured
// with both consumers, delivers exactly the committed one and the stream's to WebSocket
// clients. Uses the machine's PostgreSQL (127.0.0.1:5432, trust; a database of its own) and a
// private redis-server. PYTHON names the interpreter with examples/python/requirements.txt.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { RealtimeClient } from "../realtime.js";
import { startServer, until } from "../test/harness.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const db = `rt_examples_${process.pid}`;
const psql = (sql) => execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", sql]);
const dsn = `postgresql://postgres@127.0.0.1:5432/${db}`;
let server;
let redis;
let redisUrl;

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

before(async () => {
  psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  psql(`CREATE DATABASE ${db}`);
  const port = await freePort();
  redis = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  redisUrl = `redis://127.0.0.1:${port}`;
  const file = path.join(os.tmpdir(), `rt-consumers-${process.pid}.toml`);
  fs.writeFileSync(
    file,
    `[[consumers]]\nname = "orders"\nkind = "postgres"\ndsn = "${dsn}"\npoll_interval_ms = 200\n\n` +
      `[[consumers]]\nname = "jobs"\nkind = "redis_stream"\nurl = "${redisUrl}"\npoll_interval_ms = 200\n`,
  );
  server = await startServer({}, ["--config", file]);
});
after(() => {
  server?.stop();
  redis?.kill();
  try {
    psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  } catch {}
});

const run = (cmd, args, env) =>
  execFileSync(cmd, args, { cwd: root, env: { ...process.env, ...env }, timeout: 60000 }).toString();

test("the Python outbox job: only the committed notification arrives, once", async () => {
  const c = new RealtimeClient(server.ws, { WebSocket, token: server.token("shop", { topics: ["orders:*"] }) });
  const got = [];
  c.on("publication", (p) => got.push([p.topic, p.payload]));
  c.connect();
  await c.subscribe("orders:42");
  // The outbox exists once the consumer has made it.
  await until("the outbox table", () => {
    try {
      execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qc", "SELECT 1 FROM realtime_outbox_leases"]);
      return true;
    } catch {
      return false;
    }
  });
  const out = run(process.env.PYTHON || "python3", ["examples/python/outbox_job.py"], { REALTIME_DSN: dsn });
  assert.match(out, /order 42 paid/);
  await until("the notification", () => got.length >= 1);
  // Run it again: the same message id, so the row applied again is not delivered twice.
  run(process.env.PYTHON || "python3", ["examples/python/outbox_job.py"], { REALTIME_DSN: dsn });
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(got, [["orders:42", { id: 42, status: "paid" }]]);
  c.close();
});

test("the Node stream job: its send_to_user reaches the user", async () => {
  const c = new RealtimeClient(server.ws, { WebSocket, token: server.token("exporter") });
  const got = [];
  c.on("message", (m) => got.push([m.type, m.payload]));
  c.connect();
  await until("connected", () => c.state === "connected");
  const out = run(process.execPath, ["examples/node/stream_job.js"], { REALTIME_REDIS: redisUrl, REALTIME_USER: "exporter" });
  assert.match(out, /^added \d+-\d+ to realtime/);
  await until("the message", () => got.length >= 1);
  assert.deepEqual(got, [["job.done", { job: "export", rows: 1200 }]]);
  c.close();
});
