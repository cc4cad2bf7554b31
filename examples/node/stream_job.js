// A background job that pushes through a Redis stream (docs/consumers.md): it adds a
// notification to the stream the service reads with a `[[consumers]] kind = "redis_stream"`
// entry; the service applies it (here, a SendToUser) and acknowledges it.
//
//   cd examples/node && npm ci
//   REALTIME_REDIS=redis://127.0.0.1:6379 node examples/node/stream_job.js
//
// Environment: REALTIME_REDIS (default redis://127.0.0.1:6379), REALTIME_STREAM (default
// realtime), REALTIME_USER (default dev-user).
import { createClient } from "redis";

const redis = createClient({ url: process.env.REALTIME_REDIS || "redis://127.0.0.1:6379" });
await redis.connect();
const stream = process.env.REALTIME_STREAM || "realtime";
const user = process.env.REALTIME_USER || "dev-user";
const id = await redis.xAdd(
  stream,
  "*",
  {
    method: "send_to_user",
    payload: JSON.stringify({
      userId: user,
      message: { type: "job.done", payload: { job: "export", rows: 1200 }, id: "export-1200" },
    }),
  },
  // Keep the stream bounded: the service acknowledges, it does not delete.
  { TRIM: { strategy: "MAXLEN", strategyModifier: "~", threshold: 100000 } },
);
console.log(`added ${id} to ${stream}`);
await redis.quit();
