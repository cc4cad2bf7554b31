// The demo page's script: connects with the token from the URL fragment (`#token=...`, never
// sent to the server) or the form, shows the connection state, subscribes to topics, and
// lists what arrives. The client is on `window.demo` for tests and the console.
import { RealtimeClient } from "/demo/realtime.js";

const $ = (id) => document.getElementById(id);
const MAX_SHOWN = 200;
const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const params = new URLSearchParams(location.hash.slice(1));
let token = params.get("token") || "";
let count = 0;

function show(kind, text) {
  const li = document.createElement("li");
  const k = document.createElement("span");
  k.className = "kind";
  k.textContent = kind;
  li.append(k, text);
  li.dataset.kind = kind;
  $("messages").prepend(li);
  while ($("messages").children.length > MAX_SHOWN) $("messages").lastChild.remove();
  count += 1;
  $("count").textContent = `(${count})`;
}

const client = new RealtimeClient(url, { getToken: async () => token || null });
window.demo = { client, show };

client.on("state", (s) => {
  const el = $("state");
  el.dataset.state = s.state;
  el.textContent = s.state + (s.code ? ` (${s.code}${s.reason ? " " + s.reason : ""})` : "");
  $("conn").textContent = s.state === "connected" ? s.connectionId : "";
  if (s.state === "closed" && !token) $("token-form").hidden = false;
});
client.on("message", (m) => show(m.type, JSON.stringify(m.payload)));
client.on("publication", (p) => show(`${p.topic}#${p.offset}`, JSON.stringify(p.payload)));
client.on("unrecovered", (s) => show("unrecovered", `${s.topic}: reload its state`));
client.on("error", (e) => show("error", e && e.message ? e.message : String(e)));

$("subscribe-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const topic = $("topic").value.trim();
  if (!topic) return;
  try {
    const r = await client.subscribe(topic);
    const li = document.createElement("li");
    li.textContent = topic;
    li.dataset.topic = topic;
    $("topics").append(li);
    show("subscribed", `${topic} at offset ${r.offset}`);
    $("topic").value = "";
  } catch (e) {
    show("error", `${topic}: ${e.message}`);
  }
});

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  if (token) {
    $("token-form").hidden = true;
    client.connect();
  }
});

if (token) client.connect();
else $("token-form").hidden = false;
