// The client against the real server binary on loopback: direct messages, topics, recovery
// after the server drops the connection, token refresh, and each close code's behaviour.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { RealtimeClient, RealtimeError } from "../realtime.js";
import { startServer, until, msg } from "./harness.js";

let server;
before(async () => {
  server = await startServer();
});
after(() => server.stop());

function client(user, opts = {}) {
  const c = new RealtimeClient(server.ws, {
    WebSocket,
    getToken: async () => server.token(user, { topics: ["news:*"] }),
    initialBackoffMs: 20,
    maxBackoffMs: 100,
    ...opts,
  });
  c.states = [];
  c.on("state", (s) => c.states.push(s));
  return c;
}

const connected = (c) => until("connected", () => c.state === "connected");

test("a direct message reaches its handler by type; a throwing handler does not break the loop", async () => {
  const c = client("ada");
  const got = [];
  c.on("message:hello", () => {
    throw new Error("handler bug");
  });
  c.on("message:hello", (m) => got.push(m.payload));
  const errors = [];
  c.on("error", (e) => errors.push(e.message));
  c.connect();
  await connected(c);
  const r = await server.call("SendToUser", { user_id: "ada", message: msg("hello", { n: 1 }) });
  assert.equal(r.connections, 1);
  await server.call("SendToUser", { user_id: "ada", message: msg("hello", { n: 2 }) });
  await until("two messages", () => got.length === 2);
  assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
  assert.deepEqual(errors, ["handler bug", "handler bug"]);
  assert.equal((await c.ping()).op, "pong");
  c.close();
});

test("topics: subscribe, publications, a refused topic, unsubscribe", async () => {
  const c = client("bea");
  c.connect();
  const sub = await c.subscribe("news:1");
  assert.equal(sub.topic, "news:1");
  assert.equal(typeof sub.epoch, "string");
  const pubs = [];
  c.on("publication:news:1", (p) => pubs.push(p.payload.n));
  await server.call("Publish", { topic: "news:1", message: msg("n", { n: 1 }) });
  await until("publication", () => pubs.length === 1);
  await assert.rejects(c.subscribe("secret:1"), (e) => e instanceof RealtimeError && e.code === "forbidden");
  await c.unsubscribe("news:1");
  await server.call("Publish", { topic: "news:1", message: msg("n", { n: 2 }) });
  assert.equal((await c.ping()).op, "pong"); // anything after unsubscribed would have come first
  assert.deepEqual(pubs, [1]);
  c.close();
});

test("after the server drops the connection it reconnects and recovers missed publications", async () => {
  let gate = null;
  const c = client("cy", {
    getToken: async () => {
      if (gate) await gate; // hold the reconnect until the publications are made
      return server.token("cy", { topics: ["news:*"] });
    },
  });
  const pubs = [];
  const unrecovered = [];
  c.on("publication:news:2", (p) => pubs.push(p.offset));
  c.on("unrecovered", (u) => unrecovered.push(u));
  c.connect();
  await c.subscribe("news:2");
  await server.call("Publish", { topic: "news:2", message: msg("n", {}) });
  await until("first publication", () => pubs.length === 1);
  const first = c.connectionId;
  let open;
  gate = new Promise((r) => (open = r));
  await server.call("Disconnect", { connection_id: first, code: 4008, reason: "test" });
  await until("disconnected", () => c.state !== "connected");
  await server.call("Publish", { topic: "news:2", message: msg("n", {}) });
  await server.call("Publish", { topic: "news:2", message: msg("n", {}) });
  open();
  await connected(c);
  await until("the missed publications", () => pubs.length === 3);
  assert.deepEqual(pubs, [pubs[0], pubs[0] + 1, pubs[0] + 2]);
  assert.notEqual(c.connectionId, first);
  assert.deepEqual(unrecovered, []);
  assert.ok(c.states.some((s) => s.state === "disconnected" && s.code === 4008));
  c.close();
});

test("direct messages sent while away arrive after the reconnect, in order, once", async () => {
  let gate = null;
  const c = client("dot", {
    getToken: async () => {
      if (gate) await gate; // hold the reconnect until the messages are sent
      return server.token("dot");
    },
  });
  const got = [];
  const unrecovered = [];
  c.on("message:note", (m) => got.push([m.offset, m.payload.n]));
  c.on("unrecovered", (u) => unrecovered.push(u));
  c.connect();
  await connected(c);
  const start = c.userStream.offset;
  await server.call("SendToUser", { user_id: "dot", message: msg("note", { n: 1 }) });
  await until("the first message", () => got.length === 1);
  let open;
  gate = new Promise((r) => (open = r));
  await server.call("Disconnect", { user_id: "dot", code: 4008, reason: "test" });
  await until("disconnected", () => c.state !== "connected");
  for (const n of [2, 3]) {
    const r = await server.call("SendToUser", { user_id: "dot", message: msg("note", { n }) });
    assert.equal(r.connections, 0, "sent while away");
  }
  open();
  await connected(c);
  assert.equal(c.states.at(-1).recovered, true);
  await server.call("SendToUser", { user_id: "dot", message: msg("note", { n: 4 }) });
  await until("every message", () => got.length === 4);
  assert.deepEqual(got, [1, 2, 3, 4].map((n) => [start + n, n]));
  assert.deepEqual(c.userStream.offset, start + 4);
  assert.deepEqual(unrecovered, []);
  c.close();
});

test("a user stream that cannot be resumed says so with unrecovered", async () => {
  const c = client("eve", { userStream: { offset: 5, epoch: "not-the-epoch" } });
  const unrecovered = [];
  c.on("unrecovered", (u) => unrecovered.push(u));
  c.connect();
  await connected(c);
  assert.equal(c.states.at(-1).recovered, false);
  assert.deepEqual(unrecovered, [{ user: true, offset: 0, epoch: c.userStream.epoch, recovered: false }]);
  c.close();
});

test("the token is refreshed before it expires and the connection outlives the first token", async () => {
  let calls = 0;
  const c = client("dee", {
    getToken: async () => {
      calls += 1;
      return server.token("dee", { ttl: 3 });
    },
    refreshBeforeMs: 2000,
  });
  c.connect();
  await connected(c);
  const id = c.connectionId;
  await until("a refresh", () => calls >= 2, 5000);
  // Time itself is the condition here: outlive the first token's exp (3 s after minting).
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal(c.state, "connected");
  assert.equal(c.connectionId, id);
  c.close();
});

async function closedWith(code, opts = {}) {
  const c = client(`close-${code}`, opts);
  c.connect();
  await connected(c);
  const first = c.connectionId;
  const at = Date.now();
  await server.call("Disconnect", { connection_id: first, code, reason: "test" });
  await until("disconnected", () => c.states.some((s) => s.state === "disconnected"));
  return { c, first, at };
}

for (const code of [4008, 4408]) {
  test(`close ${code}: reconnects`, async () => {
    const { c, first } = await closedWith(code);
    await connected(c);
    assert.notEqual(c.connectionId, first);
    c.close();
  });
}

test("close 4029: reconnects, but only after the slow backoff", async () => {
  const { c, at } = await closedWith(4029, { slowBackoffMs: 400 });
  await connected(c);
  assert.ok(Date.now() - at >= 400, `reconnected after ${Date.now() - at} ms`);
  c.close();
});

for (const code of [4000, 4400]) {
  test(`close ${code}: stops`, async () => {
    const { c } = await closedWith(code);
    await until("closed", () => c.state === "closed");
    // A wrong reconnect would come within the 20..40 ms backoff; 300 ms shows none did.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(c.state, "closed");
    const list = await server.call("ListConnections", { user_id: `close-${code}` });
    assert.equal(list.connections.length, 0);
  });
}

test("close 4000 with reconnectOn4000: reconnects", async () => {
  const { c } = await closedWith(4000, { reconnectOn4000: true });
  await until("connected again", () => c.state === "connected" && c.states.length > 3);
  c.close();
});

test("close 4001: asks for a fresh token, and stops when it gets none", async () => {
  let calls = 0;
  const c = client("eve", {
    getToken: async () => (++calls === 1 ? server.token("eve") : null),
  });
  c.connect();
  await connected(c);
  await server.call("Disconnect", { connection_id: c.connectionId, code: 4001, reason: "expired" });
  await until("closed", () => c.state === "closed");
  assert.equal(calls, 2);
});

test("close 1001 (server shutting down) and 1006 (connection lost): keeps reconnecting", async () => {
  const other = await startServer();
  const c = new RealtimeClient(other.ws, {
    WebSocket,
    getToken: async () => other.token("fay"),
    initialBackoffMs: 20,
    maxBackoffMs: 50,
  });
  const states = [];
  c.on("state", (s) => states.push(s));
  c.connect();
  await until("connected", () => c.state === "connected");
  other.stop(); // SIGTERM: the server closes every socket with 1001
  await until("a reconnect attempt that fails", () =>
    states.some((s) => s.state === "disconnected" && s.code === 1006),
  );
  const codes = states.filter((s) => s.state === "disconnected").map((s) => s.code);
  assert.equal(codes[0], 1001);
  assert.ok(states.filter((s) => s.state === "connecting").length >= 2);
  assert.notEqual(c.state, "closed");
  c.close();
});
