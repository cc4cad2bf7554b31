// Users you can count on, from a Node backend: a notification that survives a reconnect
// (SendToUser with an id: it takes its place in the user's stream, and a retry is not
// delivered twice), a "who is online" panel (GetUsers), then USER_ONLINE / USER_OFFLINE as
// they happen (WatchEvents).
//
//   cd examples/node && npm ci
//   REALTIME_API_KEY=... node examples/node/users.js
//
// Environment: REALTIME_GRPC (default 127.0.0.1:50051), REALTIME_API_KEY (required),
// REALTIME_USER (who is notified, default dev-user), REALTIME_USERS (the panel, comma-separated,
// default the notified user), REALTIME_EVENTS (stop after this many transitions; default 0:
// watch until Ctrl-C).
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const key = process.env.REALTIME_API_KEY;
if (!key) {
  console.error("set REALTIME_API_KEY (boundary-realtime dev prints one)");
  process.exit(1);
}
const target = process.env.REALTIME_GRPC || "127.0.0.1:50051";
const user = process.env.REALTIME_USER || "dev-user";
const panel = (process.env.REALTIME_USERS || user).split(",").filter(Boolean);
const wanted = Number(process.env.REALTIME_EVENTS || "0");

const definition = protoLoader.loadSync(path.join(root, "proto/boundary/realtime/v1/realtime.proto"), {
  keepCase: true,
  longs: String, // offsets are uint64
  enums: String, // event kinds by name
  defaults: true,
});
const { RealtimeService } = grpc.loadPackageDefinition(definition).boundary.realtime.v1;
const rt = new RealtimeService(target, grpc.credentials.createInsecure());
const auth = new grpc.Metadata();
auth.set("authorization", `Bearer ${key}`);

const call = (method, request) =>
  new Promise((resolve, reject) =>
    rt[method](request, auth, { deadline: Date.now() + 5000 }, (err, res) => (err ? reject(err) : resolve(res))),
  );
// A Timestamp as ISO 8601 (UTC), or "never" when unset.
const when = (ts) =>
  ts && (Number(ts.seconds) || ts.nanos)
    ? new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6)).toISOString().replace(/\.\d+Z$/, "Z")
    : "never";

try {
  // A notification with our own id: if the browser is reconnecting, it gets it when it is
  // back (it resumes its user stream); if we retry, it is not sent twice.
  const note = {
    user_id: user,
    message: { type: "order.shipped", payload_json: JSON.stringify({ order: 42 }), id: "order-42-shipped" },
  };
  let r = await call("SendToUser", note);
  console.log(`SendToUser ${user}: offset ${r.offset}, epoch ${r.epoch}, queued to ${r.connections}`);
  r = await call("SendToUser", note);
  console.log(`retry: offset ${r.offset}, queued to ${r.connections} (not delivered again)`);

  // Who is online: one answer per id, in order.
  const { users } = await call("GetUsers", { user_ids: panel });
  for (const u of users) {
    if (u.online) console.log(`${u.user_id}: online, ${u.connections} connection(s), since ${when(u.online_since)}`);
    else console.log(`${u.user_id}: offline, last seen ${when(u.last_seen)}`);
  }

  // Then the transitions, as they happen, once each (whichever node we watch).
  const events = rt.watchEvents({ kinds: ["USER_ONLINE", "USER_OFFLINE"] }, auth);
  console.log("watching USER_ONLINE and USER_OFFLINE");
  let seen = 0;
  events.on("data", (e) => {
    console.log(`${e.kind} ${e.user_id} at ${when(e.at)}`);
    if (++seen === wanted) {
      events.cancel();
      rt.close();
    }
  });
  events.on("error", (e) => {
    if (e.code !== grpc.status.CANCELLED) {
      console.error(`${grpc.status[e.code]}: ${e.details}`);
      process.exit(1);
    }
  });
} catch (e) {
  // The status code and message name what was wrong (UNAUTHENTICATED, INVALID_ARGUMENT, ...).
  console.error(`${grpc.status[e.code] ?? "error"}: ${e.details ?? e.message}`);
  process.exit(1);
}
