// Test harness: starts the real server binary (`boundary-realtime dev` on loopback port 0),
// reads its banner for the URLs, API key and secret, mints tokens with the binary's `token`
// command, and gives a gRPC client generated from proto/ at run time.
import { spawn, execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const BIN = process.env.BOUNDARY_BIN || path.join(root, "target/debug/boundary-realtime");

/** Starts `boundary-realtime dev`; `env` adds configuration (REALTIME_<SECTION>__<KEY>),
 * `args` more flags (`--config FILE` for what the environment cannot set, like consumers). */
export async function startServer(env = {}, args = []) {
  const child = spawn(BIN, ["dev", "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", () => {});
  const deadline = Date.now() + 15000;
  while (!/Ctrl-C stops the server/.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill();
      throw new Error(`the server did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const ws = out.match(/WebSocket\s+(ws:\/\/\S+)/)[1];
  const centrifugeUrl = out.match(/Centrifugo\s+(ws:\/\/\S+)/)[1];
  const grpcAddr = out.match(/gRPC\s+(\S+)/)[1];
  const apiKey = out.match(/^\s+API key\s+(\S+)$/m)[1];
  const secret = out.match(/REALTIME_JWT__SECRET=(\S+)/)[1];
  const devToken = out.match(/^\s+Token\s+(\S+)$/m)[1];
  const demoUrl = out.match(/^\s+Demo page\s+(\S+)$/m)[1];
  const adminUrl = out.match(/^\s+Admin\s+(\S+)/m)[1];
  const def = protoLoader.loadSync(path.join(root, "proto/boundary/realtime/v1/realtime.proto"), {
    keepCase: true,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def).boundary.realtime.v1;
  const client = new pkg.RealtimeService(grpcAddr, grpc.credentials.createInsecure());
  const meta = new grpc.Metadata();
  meta.set("authorization", `Bearer ${apiKey}`);
  const call = (method, req) =>
    new Promise((resolve, reject) =>
      client[method](req, meta, (err, res) => (err ? reject(err) : resolve(res))),
    );
  const token = (sub, { ttl = 3600, topics = [], roles = [] } = {}) =>
    execFileSync(
      BIN,
      [
        "token", "--sub", sub, "--ttl", String(ttl),
        ...topics.flatMap((t) => ["--topic", t]),
        ...roles.flatMap((r) => ["--role", r]),
      ],
      { env: { ...process.env, REALTIME_JWT__SECRET: secret } },
    )
      .toString()
      .trim();
  return {
    ws,
    centrifugeUrl,
    grpcAddr,
    apiKey,
    devToken,
    demoUrl,
    adminUrl,
    call,
    token,
    stop() {
      client.close();
      child.kill("SIGTERM");
    },
  };
}

/** Polls `cond` every 10 ms until it holds; fails after `ms`. */
export async function until(what, cond, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const msg = (type, payload) => ({ type, payload_json: JSON.stringify(payload), id: "" });
