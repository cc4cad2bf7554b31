// The demo page's script: connects with the token from the URL fragment (`#token=...`, never
// sent to the server) or the form, subscribes to the topics of `#topics=a,b` (default `news`,
// the topic the dev banner publishes to), shows the connection state, and lists what arrives
// with the time it arrived. Direct messages survive a reconnect and a reload of the page (the
// user stream's position is kept in sessionStorage): the list says whether what was missed
// was recovered or must be reloaded. A token the server refuses (4001) is not tried again:
// the form asks for another. The client is on `window.demo` for tests and the console.
import { RealtimeClient } from "/demo/realtime.js";

const $ = (id) => document.getElementById(id);
const MAX_SHOWN = 200;
const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const params = new URLSearchParams(location.hash.slice(1));
const initialTopics = (params.get("topics") ?? "news").split(",").map((t) => t.trim()).filter(Boolean);
let token = params.get("token") || "";
let count = 0;

function show(kind, text) {
  const li = document.createElement("li");
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString();
  const k = document.createElement("span");
  k.className = "kind";
  k.textContent = kind;
  li.append(time, k, text);
  li.dataset.kind = kind;
  $("messages").prepend(li);
  while ($("messages").children.length > MAX_SHOWN) $("messages").lastChild.remove();
  count += 1;
  $("count").textContent = `(${count})`;
}

function askForToken(why) {
  $("refused").textContent = why;
  $("refused").hidden = !why;
  $("token-form").hidden = false;
  $("token").focus();
}

const POSITION = "boundary-realtime-demo-position";
const saved = (() => {
  try {
    return JSON.parse(sessionStorage.getItem(POSITION) || "null");
  } catch {
    return null;
  }
})();
const client = new RealtimeClient(url, { getToken: async () => token || null, userStream: saved });
const savePosition = () => sessionStorage.setItem(POSITION, JSON.stringify(client.userStream));
window.demo = { client, show };

function listTopic(topic) {
  if (document.querySelector(`#topics li[data-topic="${CSS.escape(topic)}"]`)) return;
  const li = document.createElement("li");
  li.textContent = topic;
  li.dataset.topic = topic;
  $("topics").append(li);
}

async function subscribe(topic) {
  try {
    const r = await client.subscribe(topic);
    listTopic(topic);
    show("subscribed", `${topic} at offset ${r.offset}`);
    return true;
  } catch (e) {
    show("error", `${topic}: ${e.message}`);
    return false;
  }
}

client.on("state", (s) => {
  const el = $("state");
  el.dataset.state = s.state;
  el.textContent = s.state + (s.code ? ` (${s.code}${s.reason ? " " + s.reason : ""})` : "");
  $("conn").textContent = s.state === "connected" ? s.connectionId : "";
  if (s.state === "connected") {
    savePosition();
    if (s.recovered === true) show("recovered", "direct messages: nothing missed while away");
    $("send-example").textContent = $("send-example")
      .textContent.replace(/"user_id":"[^"]*"/, `"user_id":${JSON.stringify(s.userId)}`)
      .replace(/http:\/\/[^/\s]+\/api/, `${location.protocol}//${location.host}/api`);
  }
  if (s.state === "disconnected" && s.code === 4001 && token) {
    // The server refused this token (bad, expired, or for a closed session): trying it again
    // cannot work. Forget it, so the client stops, and ask for another.
    token = "";
    askForToken(`The server refused the token (${s.reason || "unauthorized"}). Paste a fresh one.`);
  }
  if (s.state === "closed" && !token) $("token-form").hidden = false;
});
client.on("message", (m) => {
  show(m.type, JSON.stringify(m.payload));
  savePosition();
});
client.on("publication", (p) => show(`${p.topic}#${p.offset}`, JSON.stringify(p.payload)));
client.on("unrecovered", (s) =>
  show("unrecovered", s.user ? "direct messages: some were missed, reload your state" : `${s.topic}: reload its state`),
);
client.on("error", (e) => show("error", e && e.message ? e.message : String(e)));

$("subscribe-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const topic = $("topic").value.trim();
  if (!topic) return;
  if (await subscribe(topic)) $("topic").value = "";
});

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  if (token) {
    $("token-form").hidden = true;
    $("refused").hidden = true;
    client.connect();
  }
});

$("clear").addEventListener("click", () => {
  $("messages").replaceChildren();
  count = 0;
  $("count").textContent = "(0)";
});

for (const t of initialTopics) subscribe(t);
if (token) client.connect();
else askForToken("");
