// The official Centrifugo JavaScript SDK (centrifuge-js 5, from npm) against the real server's
// Centrifugo-compatible endpoint, in Node with `ws`: once with its JSON build and once with its
// Protobuf build. Nothing of the SDK is changed or stubbed; the backend side is our gRPC API.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Centrifuge as CentrifugeJson } from "centrifuge";
import { Centrifuge as CentrifugeProtobuf } from "centrifuge/build/protobuf";
import { startServer, until, msg } from "../test/harness.js";

let server;
before(async () => {
  server = await startServer();
});
after(() => server.stop());

// The Protobuf build hands over `data` as bytes and offsets as Long objects.
const builds = [
  ["JSON", CentrifugeJson, (d) => d, (o) => Number(o)],
  [
    "Protobuf",
    CentrifugeProtobuf,
    (d) => JSON.parse(new TextDecoder().decode(d)),
    (o) => (typeof o === "object" && o !== null ? o.toNumber() : Number(o)),
  ],
];

/** Records every event of a client and its subscriptions, in order. */
function recorder() {
  const events = [];
  return {
    events,
    on(emitter, prefix, names) {
      for (const name of names) emitter.on(name, (ctx) => events.push([`${prefix}${name}`, ctx]));
    },
    of(name) {
      return events.filter(([n]) => n === name).map(([, ctx]) => ctx);
    },
  };
}

const clientEvents = ["connecting", "connected", "disconnected", "message", "subscribed", "unsubscribed", "publication", "error"];
const subEvents = ["subscribing", "subscribed", "unsubscribed", "publication", "error"];

for (const [build, Centrifuge, data, num] of builds) {
  let n = 0;
  const setup = (sub, opts = {}) => {
    const user = `${build.toLowerCase()}-${sub}-${++n}`;
    const rec = recorder();
    const client = new Centrifuge(server.centrifugeUrl, {
      websocket: WebSocket,
      token: opts.token ?? server.token(user, { topics: ["news:*", "room:*"] }),
      getToken: opts.getToken,
      minReconnectDelay: 50,
      maxReconnectDelay: 200,
      timeout: 3000,
    });
    rec.on(client, "client.", clientEvents);
    return { client, rec, user };
  };
  const publish = (topic, payload) => server.call("Publish", { topic, message: msg("t", payload) });

  test(`${build}: connect, subscribe, a publication and a direct message`, async () => {
    const { client, rec, user } = setup("basic");
    const topic = `news:${build}`;
    const sub = client.newSubscription(topic);
    rec.on(sub, "sub.", subEvents);
    sub.subscribe();
    client.connect();
    await until("subscribed", () => rec.of("sub.subscribed").length === 1);
    const connected = rec.of("client.connected")[0];
    assert.equal(connected.transport, "websocket");
    const list = await server.call("ListConnections", { user_id: user });
    assert.equal(list.connections.length, 1);
    assert.equal(list.connections[0].connection_id, connected.client);
    assert.equal(list.connections[0].protocol, build === "JSON" ? "centrifuge-json" : "centrifuge-protobuf");

    const p = await publish(topic, { n: 1 });
    await until("the publication", () => rec.of("sub.publication").length === 1);
    const pub = rec.of("sub.publication")[0];
    assert.equal(num(pub.offset), Number(p.offset));
    const obj = data(pub.data);
    assert.deepEqual([obj.type, obj.payload, obj.id], ["t", { n: 1 }, p.message_id]);

    await server.call("SendToUser", { user_id: user, message: msg("hello", [1, 2]) });
    await until("the message", () => rec.of("client.message").length === 1);
    const m = data(rec.of("client.message")[0].data);
    assert.deepEqual([m.type, m.payload], ["hello", [1, 2]]);
    assert.equal(rec.of("client.error").length, 0);
    client.disconnect();
  });

  test(`${build}: recovery after a disconnect: recovered, in order, nothing twice`, async () => {
    const { client, rec } = setup("recover");
    const topic = `news:r-${build}`;
    const sub = client.newSubscription(topic);
    rec.on(sub, "sub.", subEvents);
    sub.subscribe();
    client.connect();
    await until("subscribed", () => rec.of("sub.subscribed").length === 1);
    await publish(topic, 1);
    await until("the first publication", () => rec.of("sub.publication").length === 1);
    client.disconnect();
    await until("disconnected", () => client.state === "disconnected");
    for (const i of [2, 3, 4]) await publish(topic, i);
    client.connect();
    await until("resubscribed", () => rec.of("sub.subscribed").length === 2);
    const again = rec.of("sub.subscribed")[1];
    assert.equal(again.wasRecovering, true);
    assert.equal(again.recovered, true);
    await until("the missed publications", () => rec.of("sub.publication").length === 4);
    await publish(topic, 5);
    await until("a live one after", () => rec.of("sub.publication").length === 5);
    const got = rec.of("sub.publication").map((p) => [num(p.offset), data(p.data).payload]);
    assert.deepEqual(got, [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]);
    client.disconnect();
  });

  test(`${build}: a resubscribe the history cannot cover says recovered: false`, async () => {
    const { client, rec } = setup("lost");
    const topic = `news:l-${build}`;
    const sub = client.newSubscription(topic);
    rec.on(sub, "sub.", subEvents);
    sub.subscribe();
    client.connect();
    await until("subscribed", () => rec.of("sub.subscribed").length === 1);
    await publish(topic, 0);
    await until("a publication", () => rec.of("sub.publication").length === 1);
    client.disconnect();
    // The dev server keeps 100 publications per topic.
    for (let i = 1; i <= 102; i++) await publish(topic, i);
    client.connect();
    await until("resubscribed", () => rec.of("sub.subscribed").length === 2);
    const again = rec.of("sub.subscribed")[1];
    assert.equal(again.wasRecovering, true);
    assert.equal(again.recovered, false);
    assert.equal(num(again.streamPosition.offset), 103);
    await publish(topic, "live");
    await until("live delivery goes on", () => rec.of("sub.publication").length === 2);
    assert.equal(data(rec.of("sub.publication")[1].data).payload, "live", "nothing replayed");
    client.disconnect();
  });

  test(`${build}: the token is refreshed through getToken before exp`, async () => {
    const user = `${build.toLowerCase()}-refresh`;
    let asked = 0;
    const { client, rec } = setup("refresh", {
      // 3 s: with whole-second exp and ttl, a 2 s token can leave the SDK under a second.
      token: server.token(user, { ttl: 3 }),
      getToken: async () => {
        asked++;
        return server.token(user, { ttl: 3600 });
      },
    });
    client.connect();
    await until("connected", () => rec.of("client.connected").length === 1);
    await until("getToken", () => asked === 1, 6000);
    // Past the first token's exp (+ the sweeper's tick), still the same connection.
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal(client.state, "connected");
    assert.equal(rec.of("client.connected").length, 1);
    assert.equal(rec.of("client.disconnected").length + rec.of("client.connecting").length, 1, "only the first connecting");
    client.disconnect();
  });

  test(`${build}: an expired token gets 109, then the SDK asks getToken and connects`, async () => {
    const user = `${build.toLowerCase()}-expired`;
    const stale = server.token(user, { ttl: 1 });
    await new Promise((r) => setTimeout(r, 1100));
    let asked = 0;
    const { client, rec } = setup("expired", {
      token: stale,
      getToken: async () => {
        asked++;
        return server.token(user, { ttl: 3600 });
      },
    });
    client.connect();
    await until("connected", () => rec.of("client.connected").length === 1);
    assert.equal(asked, 1);
    const errors = rec.of("client.error");
    assert.equal(errors.length, 1);
    assert.equal(errors[0].error.code, 109);
    client.disconnect();
  });

  test(`${build}: the personal channel carries direct messages and recovers them after a forced reconnect`, async () => {
    const personal = await startServer({ REALTIME_CENTRIFUGE__PERSONAL_CHANNEL: "true" });
    const user = `${build.toLowerCase()}-personal`;
    const channel = `#${user}`;
    const rec = recorder();
    const client = new Centrifuge(personal.centrifugeUrl, {
      websocket: WebSocket,
      token: personal.token(user),
      // Long enough that the message below is sent while the client is away.
      minReconnectDelay: 700,
      maxReconnectDelay: 900,
      timeout: 3000,
    });
    rec.on(client, "client.", clientEvents);
    const send = (n) => personal.call("SendToUser", { user_id: user, message: msg("note", { n }) });
    try {
      client.connect();
      await until("the personal channel", () => rec.of("client.subscribed").length === 1);
      const first = rec.of("client.subscribed")[0];
      assert.equal(first.channel, channel);
      assert.equal((await send(1)).connections, 1);
      await until("the first message", () => rec.of("client.publication").length === 1);
      await personal.call("Disconnect", { user_id: user, code: 4000, reason: "come back" });
      await until("reconnecting", () => rec.of("client.connecting").length === 2);
      assert.equal((await send(2)).connections, 0, "sent while away");
      await until("reconnected", () => rec.of("client.connected").length === 2);
      await until("the missed message", () => rec.of("client.publication").length === 2);
      const again = rec.of("client.subscribed")[1];
      assert.equal(again.channel, channel);
      assert.equal(again.wasRecovering, true);
      assert.equal(again.recovered, true);
      await send(3);
      await until("a live one", () => rec.of("client.publication").length === 3);
      const pubs = rec.of("client.publication");
      assert.deepEqual(pubs.map((p) => p.channel), [channel, channel, channel]);
      assert.deepEqual(pubs.map((p) => num(p.offset)), [1, 2, 3]);
      assert.deepEqual(pubs.map((p) => data(p.data).payload.n), [1, 2, 3]);
      assert.equal(rec.of("client.message").length, 0, "not as message pushes");
    } finally {
      client.disconnect();
      personal.stop();
    }
  });

  test(`${build}: Disconnect with a reconnecting code comes back; a terminal one stays down`, async () => {
    const { client, rec, user } = setup("kick");
    client.connect();
    await until("connected", () => rec.of("client.connected").length === 1);
    await server.call("Disconnect", { user_id: user, code: 4000, reason: "come back" });
    await until("reconnected", () => rec.of("client.connected").length === 2);
    const back = rec.of("client.connecting").find((c) => c.code === 4000);
    assert.equal(back.reason, "come back");
    await server.call("Disconnect", { user_id: user, code: 4501, reason: "banned" });
    await until("disconnected", () => rec.of("client.disconnected").length === 1);
    const gone = rec.of("client.disconnected")[0];
    assert.deepEqual([gone.code, gone.reason], [4501, "banned"]);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(client.state, "disconnected", "no reconnect after a terminal code");
    assert.equal(rec.of("client.connected").length, 2);
  });

  test(`${build}: a server-side Subscribe arrives as a subscription with publications`, async () => {
    const { client, rec, user } = setup("server-sub");
    client.connect();
    await until("connected", () => rec.of("client.connected").length === 1);
    const topic = `alerts-${build}`;
    const r = await server.call("Subscribe", { topic, user_id: user });
    assert.equal(r.connections, 1);
    await until("the subscribed event", () => rec.of("client.subscribed").length === 1);
    assert.equal(rec.of("client.subscribed")[0].channel, topic);
    await publish(topic, "alert");
    await until("the publication", () => rec.of("client.publication").length === 1);
    const p = rec.of("client.publication")[0];
    assert.equal(p.channel, topic);
    assert.equal(data(p.data).payload, "alert");
    await server.call("Unsubscribe", { topic, user_id: user });
    await until("the unsubscribed event", () => rec.of("client.unsubscribed").length === 1);
    client.disconnect();
  });

  test(`${build}: joinLeave subscriptions see joins and leaves`, async () => {
    const { client, rec, user } = setup("joins");
    const topic = `room:j-${build}`;
    const sub = client.newSubscription(topic, { joinLeave: true });
    rec.on(sub, "sub.", [...subEvents, "join", "leave"]);
    sub.subscribe();
    client.connect();
    await until("its own join", () => rec.of("sub.join").length === 1);
    assert.equal(rec.of("sub.join")[0].info.user, user);
    const other = setup("joiner");
    const theirs = other.client.newSubscription(topic);
    theirs.subscribe();
    other.client.connect();
    await until("the other's join", () => rec.of("sub.join").length === 2);
    const joined = rec.of("sub.join")[1].info;
    assert.equal(joined.user, other.user);
    other.client.disconnect();
    await until("the other's leave", () => rec.of("sub.leave").length === 1);
    assert.equal(rec.of("sub.leave")[0].info.client, joined.client);
    client.disconnect();
  });

  test(`${build}: presence, presence stats and history`, async () => {
    const { client, rec, user } = setup("presence");
    const topic = `room:${build}`;
    const sub = client.newSubscription(topic);
    rec.on(sub, "sub.", subEvents);
    sub.subscribe();
    client.connect();
    await until("subscribed", () => rec.of("sub.subscribed").length === 1);
    const id = rec.of("client.connected")[0].client;
    const presence = await sub.presence();
    assert.deepEqual(Object.keys(presence.clients), [id]);
    assert.equal(presence.clients[id].user, user);
    const stats = await sub.presenceStats();
    assert.deepEqual([stats.numClients, stats.numUsers], [1, 1]);
    for (const i of [1, 2, 3]) await publish(topic, i);
    const h = await sub.history({ limit: 2 });
    assert.deepEqual(
      h.publications.map((p) => [num(p.offset), data(p.data).payload]),
      [[1, 1], [2, 2]],
    );
    assert.equal(num(h.offset), 3);
    await assert.rejects(client.publish(topic, { x: 1 }), (e) => e.code === 103);
    await assert.rejects(client.rpc("m", {}), (e) => e.code === 108);
    const forbidden = client.newSubscription("secret");
    rec.on(forbidden, "forbidden.", subEvents);
    forbidden.subscribe();
    await until("refused", () => rec.of("forbidden.unsubscribed").length === 1);
    assert.equal(rec.of("forbidden.unsubscribed")[0].code, 103);
    assert.equal(client.state, "connected", "the connection stays");
    client.disconnect();
  });
}
