// The backend examples (examples/python/send.py, examples/node/send.js) run against a live
// server, and a WebSocket client (this library) checks it got what each sent: the SendToUser
// greeting, the Broadcast announcement and the topic publication.
// PYTHON names the interpreter that has examples/python/requirements.txt (default python3).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
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

function run(cmd, args, env) {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { cwd: root, env: { ...process.env, ...env }, timeout: 60000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(" ")} failed: ${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
    ),
  );
}

const examples = [
  ["python", process.env.PYTHON || "python3", ["examples/python/send.py"]],
  ["node", process.execPath, ["examples/node/send.js"]],
];

for (const [name, cmd, args] of examples) {
  test(`the ${name} example's SendToUser, Broadcast, Publish, PublishBatch and PublishStream reach a WebSocket client`, async () => {
    const user = `example-${name}`;
    const topic = `news:${name}`;
    const c = new RealtimeClient(server.ws, {
      WebSocket,
      token: server.token(user, { topics: ["news:*"] }),
    });
    const got = [];
    c.on("message", (m) => got.push(["message", m.type, m.payload]));
    c.on("publication", (p) => got.push(["publication", p.topic, p.offset, p.payload]));
    c.connect();
    await c.subscribe(topic);
    const out = await run(cmd, args, {
      REALTIME_GRPC: server.grpcAddr,
      REALTIME_API_KEY: server.apiKey,
      REALTIME_USER: user,
      REALTIME_TOPIC: topic,
    });
    await until("eight frames", () => got.length >= 8);
    assert.deepEqual(got, [
      ["message", "greeting", { text: `hello from ${name === "python" ? "Python" : "Node"}` }],
      ["message", "announcement", { text: "maintenance at 22:00", from: name }],
      ["publication", topic, 1, { title: `${name === "python" ? "Python" : "Node"} publishes`, from: name }],
      // PublishBatch, then PublishStream: in order, after the unary Publish.
      ...[0, 1, 2, 3, 4].map((n) => ["publication", topic, n + 2, { n }]),
    ]);
    assert.match(out, /PublishBatch: offsets 2, 3, 4\n/);
    assert.match(out, /PublishStream: offsets 5, 6\n/);
    assert.match(out, new RegExp(`SendToUser ${user}: queued to 1 connection`));
    assert.match(out, new RegExp(`Publish ${topic}: offset 1,`));
    assert.match(out, new RegExp(`connection ${c.connectionId.replace(".", "\\.")} user ${user} topics .*${topic}`));
    c.close();
  });
}
