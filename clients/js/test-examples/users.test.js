// The "users" backend examples (examples/python/users.py, examples/node/users.js) against a
// live server: the notification reaches the user's connection once (with its stream offset)
// although the example retries it, the panel says who is online, and the watcher prints the
// transitions of a user who comes and goes while it watches.
// PYTHON names the interpreter that has examples/python/requirements.txt (default python3).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { RealtimeClient } from "../realtime.js";
import { startServer, until } from "../test/harness.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
let server;
before(async () => {
  server = await startServer({ REALTIME_USERS__OFFLINE_GRACE_MS: "300" });
});
after(() => server.stop());

const examples = [
  ["python", process.env.PYTHON || "python3", ["examples/python/users.py"]],
  ["node", process.execPath, ["examples/node/users.js"]],
];

const connect = async (user) => {
  const c = new RealtimeClient(server.ws, { WebSocket, token: server.token(user) });
  c.connect();
  await until(`${user} connected`, () => c.state === "connected");
  return c;
};

for (const [name, cmd, args] of examples) {
  test(`the ${name} users example: a notification once, who is online, and transitions`, async () => {
    const [here, away, later] = ["here", "away", "later"].map((u) => `${u}-${name}`);
    const c = await connect(here);
    const got = [];
    c.on("message", (m) => got.push([m.type, m.offset, m.payload]));
    const child = spawn(cmd, args, {
      cwd: root,
      env: {
        ...process.env,
        REALTIME_GRPC: server.grpcAddr,
        REALTIME_API_KEY: server.apiKey,
        REALTIME_USER: here,
        REALTIME_USERS: `${here},${away}`,
        REALTIME_EVENTS: "2",
      },
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const exited = new Promise((resolve) => child.on("exit", resolve));
    try {
      await until("watching", () => out.includes("watching USER_ONLINE and USER_OFFLINE\n"), 30000);
      const l = await connect(later);
      l.close();
      assert.equal(await exited, 0, err);
    } finally {
      child.kill();
    }
    const lines = out.trim().split("\n");
    assert.match(lines[0], new RegExp(`^SendToUser ${here}: offset 1, epoch \\S+, queued to 1$`));
    assert.equal(lines[1], "retry: offset 1, queued to 0 (not delivered again)");
    assert.match(lines[2], new RegExp(`^${here}: online, 1 connection\\(s\\), since \\d{4}-\\d\\d-\\d\\dT`));
    assert.equal(lines[3], `${away}: offline, last seen never`);
    assert.equal(lines[4], "watching USER_ONLINE and USER_OFFLINE");
    assert.match(lines[5], new RegExp(`^USER_ONLINE ${later} at \\d{4}-`));
    assert.match(lines[6], new RegExp(`^USER_OFFLINE ${later} at \\d{4}-`));
    assert.equal(lines.length, 7, out);
    await until("the notification", () => got.length === 1);
    assert.deepEqual(got, [["order.shipped", 1, { order: 42 }]]);
    assert.equal((await c.ping()).op, "pong"); // the retry would have come before this
    assert.equal(got.length, 1);
    c.close();
    // Gone for good before the next example watches (its transition is not theirs).
    await until("offline", async () => !(await server.call("GetUsers", { user_ids: [here] })).users[0].online);
  });
}
