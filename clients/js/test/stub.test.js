// The client against a stub server that authenticates it and then never answers: the request
// timeout and the cap on pending requests. A real server always answers, so only a stub that
// withholds replies can show these.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket, { WebSocketServer } from "ws";
import { RealtimeClient } from "../realtime.js";
import { until } from "./harness.js";

function withholdingServer() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  const seen = [];
  wss.on("connection", (sock) => {
    sock.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      seen.push(frame.op);
      if (frame.op === "auth") {
        sock.send(
          JSON.stringify({
            op: "connected",
            connection_id: "stub.0000000000000001",
            user_id: "u",
            expires_at: null,
            ping_interval_ms: 25000,
          }),
        );
      }
      // Every other request is withheld.
    });
  });
  return new Promise((resolve) =>
    wss.on("listening", () =>
      resolve({ wss, seen, url: `ws://127.0.0.1:${wss.address().port}/ws` }),
    ),
  );
}

test("an unanswered request times out; past maxPending a request is refused at once", async () => {
  const server = await withholdingServer();
  const c = new RealtimeClient(server.url, {
    WebSocket,
    token: "t",
    requestTimeoutMs: 300,
    maxPending: 2,
  });
  c.connect();
  await until("connected", () => c.state === "connected");
  const started = Date.now();
  const first = c.ping();
  const second = c.ping();
  await assert.rejects(c.ping(), (e) => e.code === "too_many_requests");
  await assert.rejects(first, (e) => e.code === "timeout");
  await assert.rejects(second, (e) => e.code === "timeout");
  const took = Date.now() - started;
  assert.ok(took >= 290 && took < 5000, `the timeouts took ${took} ms`);
  // The timed-out requests freed their places.
  await assert.rejects(c.ping(), (e) => e.code === "timeout");
  assert.deepEqual(server.seen, ["auth", "ping", "ping", "ping"]);
  c.close();
  await new Promise((r) => server.wss.close(r));
});
