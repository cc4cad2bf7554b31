// The subscriber of scripts/consumer_budget.sh: subscribes to TOPIC and counts publications
// until COUNT arrived (or 120 s passed); prints the rate between the first and the last
// arrival and, from each payload's `t` (unix ms when its row or entry was committed), the
// commit-to-delivery latency's median and p99, as one JSON line.
// Usage: node bench/consumer-sink.js WS_URL TOKEN TOPIC COUNT
import WebSocket from "ws";

const [url, token, topic, count] = process.argv.slice(2);
const want = Number(count);
const ws = new WebSocket(`${url}?token=${token}`);
let got = 0;
let first = 0;
let last = 0;
const lat = [];
const done = () => {
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? null;
  const secs = (last - first) / 1000;
  console.log(JSON.stringify({ received: got, seconds: secs, perSecond: secs > 0 ? Math.round((got - 1) / secs) : null, latencyMsP50: q(0.5), latencyMsP99: q(0.99) }));
  process.exit(0);
};
setTimeout(done, 120000);
ws.on("message", (d) => {
  const m = JSON.parse(d.toString());
  if (m.op === "connected") {
    ws.send(JSON.stringify({ op: "subscribe", topic, ref: "s" }));
  } else if (m.op === "subscribed") {
    console.log("ready");
  } else if (m.topic === topic) {
    const now = Date.now();
    if (!got) first = now;
    last = now;
    got++;
    if (m.payload && m.payload.t) lat.push(now - m.payload.t);
    if (got >= want) done();
  }
});
