// A backend in Node calling boundary-realtime over gRPC (@grpc/grpc-js + @grpc/proto-loader,
// loading proto/ at run time): SendToUser, Broadcast, Publish, then ListConnections.
//
//   cd examples/node && npm ci
//   REALTIME_API_KEY=... node examples/node/send.js
//
// Environment: REALTIME_GRPC (default 127.0.0.1:50051), REALTIME_API_KEY (required),
// REALTIME_USER (default dev-user), REALTIME_TOPIC (default news).
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
const topic = process.env.REALTIME_TOPIC || "news";

const definition = protoLoader.loadSync(path.join(root, "proto/boundary/realtime/v1/realtime.proto"), {
  keepCase: true,
  longs: String, // offsets are uint64
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
const message = (type, payload) => ({ type, payload_json: JSON.stringify(payload) });

try {
  let r = await call("SendToUser", { user_id: user, message: message("greeting", { text: "hello from Node" }) });
  console.log(`SendToUser ${user}: queued to ${r.connections} connection(s), id ${r.message_id}`);

  r = await call("Broadcast", { message: message("announcement", { text: "maintenance at 22:00", from: "node" }) });
  console.log(`Broadcast: queued to ${r.connections} connection(s)`);

  r = await call("Publish", { topic, message: message("headline", { title: "Node publishes", from: "node" }) });
  console.log(`Publish ${topic}: offset ${r.offset}, epoch ${r.epoch}, queued to ${r.connections}`);

  // Many publications in one call: one result per item, in order (an item that fails answers
  // its own code and error; the others are still published).
  const items = [0, 1, 2].map((n) => ({ topic, message: message("headline", { n }) }));
  const batch = await call("PublishBatch", { items });
  console.log(`PublishBatch: offsets ${batch.results.map((x) => x.response.offset).join(", ")}`);

  // Or a stream of them, for as long as the backend likes: each answered in order.
  const offsets = await new Promise((resolve, reject) => {
    const got = [];
    const stream = rt.PublishStream(auth, { deadline: Date.now() + 5000 });
    stream.on("data", (x) => got.push(x.response.offset));
    stream.on("error", reject);
    stream.on("end", () => resolve(got));
    for (const n of [3, 4]) stream.write({ topic, message: message("headline", { n }) });
    stream.end();
  });
  console.log(`PublishStream: offsets ${offsets.join(", ")}`);

  const page = await call("ListConnections", { user_id: user, page_size: 100 });
  for (const c of page.connections) {
    console.log(`connection ${c.connection_id} user ${c.user_id} topics ${JSON.stringify(c.topics)}`);
  }
} catch (e) {
  // e.code is the gRPC status (16 UNAUTHENTICATED, 3 INVALID_ARGUMENT, ...); e.details says why.
  console.error(`${grpc.status[e.code] ?? e.code}: ${e.details ?? e.message}`);
  process.exitCode = 1;
} finally {
  rt.close();
}
