// The admin console: everything it shows comes from the console's JSON API under
// `<base>/api/` (the HTTP JSON API's RPCs behind the session) and its live stream
// (`<base>/api/events`, server-sent events: the chart, totals and nodes every second, and
// every WatchEvents event). Lists are paged and fetched on demand, never every second.
const base = document.documentElement.dataset.base;
const $ = (id) => document.getElementById(id);
const PAGE = 50;
const FEED_MAX = 200;

// ---- talking to the server -------------------------------------------------------------

/** Calls an RPC of the API (`v1/<Rpc>`) or another console route; throws Error(message). */
async function call(route, body) {
  const r = await fetch(`${base}/api/${route}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body ?? {}),
    credentials: "same-origin",
  });
  return answer(r);
}

async function answer(r) {
  if (r.status === 401) {
    location.assign(`${base}/sign-in`);
    throw new Error("signed out");
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.message ? `${data.code}: ${data.message}` : `HTTP ${r.status}`);
  return data;
}

const rpc = (name, body) => call(`v1/${name}`, body);

function status(text, kind = "ok") {
  const s = $("status");
  s.textContent = text;
  s.dataset.kind = kind;
  s.hidden = false;
  clearTimeout(status.timer);
  status.timer = setTimeout(() => (s.hidden = true), 8000);
}

/** Runs an action from a form: reports its answer or its error. */
async function act(what, fn) {
  try {
    status(await fn());
  } catch (e) {
    status(`${what} failed: ${e.message}`, "error");
  }
}

// ---- helpers ---------------------------------------------------------------------------

const fmt = new Intl.NumberFormat();
const num = (n) => fmt.format(Number(n) || 0);
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
const dateTime = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

function payloadOf(textarea) {
  const text = textarea.value.trim() || "null";
  try {
    JSON.parse(text);
  } catch (e) {
    throw new Error(`the payload is not JSON: ${e.message}`);
  }
  return text;
}

// ---- totals, nodes and the chart (from the live stream) ----------------------------------

let series = [];

function showSample(s) {
  const t = s.totals;
  const set = (k, v) => (document.querySelector(`[data-total="${k}"]`).textContent = v);
  set("connections", num(t.connections));
  set("users", num(t.users));
  set("topics", num(t.topics));
  set("nodes", num(t.nodes));
  if (s.point) {
    set("sent", num(Math.round(s.point.sentPerSec)));
    set("dropped", num(Math.round(s.point.droppedPerSec)));
    // The stream's first sample may already be the series' last point.
    if (!series.length || series[series.length - 1].at < s.point.at) series.push(s.point);
    if (series.length > 300) series.shift();
    drawChart();
  }
  if (s.error) status(`Statistics: ${s.error}`, "error");
  showConsumers(s.consumers || []);
  const body = $("nodes").tBodies[0];
  body.replaceChildren(
    ...s.nodes.map((n) =>
      el(
        "tr",
        { "data-node": n.nodeId },
        el("td", {}, el("code", {}, n.nodeId), n.nodeId === s.nodeId ? " (this node)" : ""),
        el("td", {}, num(n.connections)),
        el("td", {}, num(n.users)),
        el("td", {}, num(n.messagesSent)),
        el("td", {}, num(n.messagesDropped)),
        el("td", {}, new Date(n.startedAt).toLocaleString()),
      ),
    ),
  );
}

function showConsumers(list) {
  const box = $("consumers");
  if (!list.length) {
    box.textContent = "No consumers are configured on this node.";
    return;
  }
  box.replaceChildren(
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ...["consumer", "source", "held", "applied", "failed", "retried", "waiting", "lag", "error"].map((h) => el("th", {}, h)))),
      el(
        "tbody",
        {},
        ...list.map((c) =>
          el(
            "tr",
            { "data-consumer": c.name },
            el("td", {}, c.name),
            el("td", {}, `${c.kind}: ${c.source}`),
            el("td", {}, c.kind === "redis_stream" ? (c.held.length ? "the stream" : "–") : c.held.length ? `partitions ${c.held.join(", ")}` : "–"),
            el("td", {}, num(c.applied)),
            el("td", {}, num(c.failed)),
            el("td", {}, num(c.retried)),
            el("td", {}, num(c.waiting)),
            el("td", {}, `${c.lagSeconds.toFixed(1)} s`),
            el("td", {}, c.error || ""),
          ),
        ),
      ),
    ),
  );
}

function drawChart() {
  const c = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const w = c.clientWidth || 900;
  const h = c.clientHeight || 180;
  if (c.width !== w * ratio) {
    c.width = w * ratio;
    c.height = h * ratio;
  }
  const g = c.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const pad = { l: 48, r: 8, t: 8, b: 18 };
  const max = Math.max(1, ...series.map((p) => Math.max(p.sentPerSec, p.droppedPerSec)));
  const top = niceCeil(max);
  g.strokeStyle = "#e5e7eb";
  g.fillStyle = "#6b7280";
  g.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + ((h - pad.t - pad.b) * i) / 4;
    g.beginPath();
    g.moveTo(pad.l, y);
    g.lineTo(w - pad.r, y);
    g.stroke();
    g.fillText(num(Math.round(top * (1 - i / 4))), 4, y + 4);
  }
  if (series.length === 0) return;
  const t0 = series[0].at;
  const t1 = Math.max(series[series.length - 1].at, t0 + 1000);
  const x = (at) => pad.l + ((w - pad.l - pad.r) * (at - t0)) / (t1 - t0);
  const y = (v) => pad.t + (h - pad.t - pad.b) * (1 - v / top);
  for (const [key, color] of [["sentPerSec", "#1d4ed8"], ["droppedPerSec", "#b91c1c"]]) {
    g.strokeStyle = color;
    g.lineWidth = 1.5;
    g.beginPath();
    series.forEach((p, i) => (i ? g.lineTo(x(p.at), y(p[key])) : g.moveTo(x(p.at), y(p[key]))));
    g.stroke();
  }
  $("span").textContent = `${Math.round((t1 - t0) / 1000)} s`;
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// ---- the live stream ----------------------------------------------------------------------

function openStream() {
  const es = new EventSource(`${base}/api/events`);
  const live = $("live");
  es.onopen = () => {
    live.dataset.state = "live";
    live.textContent = "live";
  };
  es.onerror = () => {
    live.dataset.state = "down";
    live.textContent = "reconnecting…";
  };
  es.addEventListener("series", (e) => {
    series = JSON.parse(e.data);
    drawChart();
  });
  es.addEventListener("stats", (e) => showSample(JSON.parse(e.data)));
  es.addEventListener("event", (e) => onEvent(JSON.parse(e.data)));
  es.addEventListener("notice", (e) => status(`Live events: ${JSON.parse(e.data).message}`, "error"));
  es.addEventListener("end", () => {
    es.close();
    location.assign(`${base}/sign-in`);
  });
}

function onEvent(ev) {
  const feed = $("feed");
  const c = ev.connection;
  const detail =
    ev.kind === "SUBSCRIBED" || ev.kind === "UNSUBSCRIBED"
      ? ` ${ev.topic}`
      : ev.kind === "DISCONNECTED"
        ? ` ${ev.closeCode} ${ev.closeReason}`
        : "";
  const li = el(
    "li",
    { "data-kind": ev.kind, "data-user": ev.userId },
    el("time", {}, time(ev.at)),
    el("b", {}, ev.kind),
    ev.userId,
    c ? el("code", {}, ` ${c.connectionId}`) : "",
    detail,
  );
  feed.prepend(li);
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
  if (ev.kind === "CONNECTED" || ev.kind === "DISCONNECTED" || ev.kind.endsWith("SUBSCRIBED")) {
    refreshSoon();
  }
}

// ---- connections ------------------------------------------------------------------------

const list = { filter: {}, token: "", next: "" };
let refreshTimer = null;
let lastRefresh = 0;

/** The listing again, at most every 2 s, when events say it changed (first pages only). */
function refreshSoon() {
  if (list.token || refreshTimer) return;
  const wait = Math.max(300, 2000 - (Date.now() - lastRefresh));
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    loadConnections();
  }, wait);
}

async function loadConnections(token = list.token) {
  lastRefresh = Date.now();
  try {
    const r = await rpc("ListConnections", { ...list.filter, pageSize: PAGE, pageToken: token });
    list.token = token;
    list.next = r.nextPageToken;
    $("conn-next").disabled = !r.nextPageToken;
    $("conn-count").textContent = `${num(r.total)} matching`;
    $("connections").tBodies[0].replaceChildren(...r.connections.map(row));
  } catch (e) {
    status(`Listing connections failed: ${e.message}`, "error");
  }
}

function row(c) {
  const meta = Object.entries(c.metadata || {}).map(([k, v]) => `${k}=${v}`).join(" ");
  const button = el("button", { type: "button", className: "danger", textContent: "Disconnect" });
  button.addEventListener("click", () => confirmDisconnect({ connectionId: c.connectionId }));
  return el(
    "tr",
    { "data-conn": c.connectionId, "data-user": c.userId },
    el("td", {}, el("code", {}, c.connectionId)),
    el("td", {}, c.userId),
    el("td", {}, c.roles.join(", ")),
    el("td", {}, c.topics.join(", ")),
    el("td", {}, dateTime(c.connectedAt)),
    el("td", {}, dateTime(c.expiresAt)),
    el("td", {}, c.nodeId),
    el("td", {}, c.remoteAddr),
    el("td", { title: c.userAgent }, c.userAgent.slice(0, 40)),
    el("td", {}, meta),
    el("td", {}, num(c.messagesSent)),
    el("td", {}, num(c.messagesDropped)),
    el("td", {}, c.protocol),
    el("td", {}, button),
  );
}

$("filter").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = {};
  if ($("f-user").value.trim()) f.userId = $("f-user").value.trim();
  if ($("f-role").value.trim()) f.role = $("f-role").value.trim();
  if ($("f-topic").value.trim()) f.topic = $("f-topic").value.trim();
  list.filter = f;
  loadConnections("");
});
$("f-clear").addEventListener("click", () => {
  for (const id of ["f-user", "f-role", "f-topic"]) $(id).value = "";
  list.filter = {};
  loadConnections("");
});
$("conn-next").addEventListener("click", () => loadConnections(list.next));
$("conn-first").addEventListener("click", () => loadConnections(""));

// ---- actions -----------------------------------------------------------------------------

/** Asks for a close code and reason, then disconnects `target` (a connection or a user). */
function confirmDisconnect(target) {
  const d = $("confirm");
  $("c-target").textContent = target.connectionId || `every connection of ${target.userId}`;
  d.returnValue = "";
  d.showModal();
  d.addEventListener(
    "close",
    () => {
      if (d.returnValue !== "ok") return;
      disconnect(target, Number($("c-code").value), $("c-reason").value);
    },
    { once: true },
  );
}

function disconnect(target, code, reason) {
  return act("Disconnect", async () => {
    const r = await rpc("Disconnect", { ...target, code, reason });
    await loadConnections();
    const who = target.connectionId || `user ${target.userId}`;
    return `Disconnected ${who}: ${r.disconnected} connection(s) closed with ${code}.`;
  });
}

$("kick").addEventListener("submit", (e) => {
  e.preventDefault();
  $("c-code").value = $("k-code").value;
  $("c-reason").value = $("k-reason").value;
  confirmDisconnect({ userId: $("k-user").value.trim() });
});

$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  act("Send", async () => {
    const user = $("s-user").value.trim();
    const r = await rpc("SendToUser", {
      userId: user,
      message: { type: $("s-type").value.trim(), payloadJson: payloadOf($("s-payload")) },
    });
    return `Sent to ${user}: ${r.connections} connection(s).`;
  });
});

$("publish").addEventListener("submit", (e) => {
  e.preventDefault();
  act("Publish", async () => {
    const topic = $("p-topic").value.trim();
    const r = await rpc("Publish", {
      topic,
      message: { type: $("p-type").value.trim(), payloadJson: payloadOf($("p-payload")) },
    });
    if ($("t-name").value.trim() === topic) showTopic(topic);
    return `Published to ${topic}: offset ${r.offset}, ${r.connections} connection(s).`;
  });
});

$("sign-out").addEventListener("click", async () => {
  try {
    await call("sign-out");
  } finally {
    location.assign(`${base}/sign-in`);
  }
});

// ---- a topic -----------------------------------------------------------------------------

let presenceNext = "";

async function showTopic(topic, more = false) {
  try {
    const page = await rpc("Presence", { topic, pageSize: PAGE, pageToken: more ? presenceNext : "" });
    $("t-counts").textContent = `${num(page.connections)} subscriber connection(s), ${num(page.users)} user(s)`;
    presenceNext = page.nextPageToken;
    $("t-more").hidden = !presenceNext;
    const items = page.clients.map((p) =>
      el("li", { "data-conn": p.connectionId }, p.userId, el("code", {}, ` ${p.connectionId}`)),
    );
    if (more) $("t-presence").append(...items);
    else $("t-presence").replaceChildren(...items);
    const head = await rpc("History", { topic, limit: 1 });
    const latest = Number(head.latestOffset);
    const since = Math.max(0, latest - 20);
    const h = await rpc("History", { topic, sinceOffset: String(since), limit: 20 });
    $("t-epoch").textContent = h.epoch ? `epoch ${h.epoch}, latest offset ${h.latestOffset}` : "";
    $("t-history").replaceChildren(
      ...h.publications.reverse().map((p) =>
        el(
          "li",
          { "data-offset": p.offset },
          el("time", {}, time(p.publishedAt)),
          el("b", {}, `#${p.offset} ${p.type} `),
          el("code", {}, p.payloadJson.slice(0, 200)),
        ),
      ),
    );
    $("topic-view").hidden = false;
  } catch (e) {
    status(`Topic ${topic}: ${e.message}`, "error");
  }
}

$("topic").addEventListener("submit", (e) => {
  e.preventDefault();
  showTopic($("t-name").value.trim());
});
$("t-more").addEventListener("click", () => showTopic($("t-name").value.trim(), true));

// ---- start ---------------------------------------------------------------------------------

async function start() {
  const r = await fetch(`${base}/api/session`, { credentials: "same-origin" });
  const s = await answer(r);
  $("who").textContent = `key #${s.keyIndex} · node ${s.nodeId} · until ${new Date(s.expiresAt).toLocaleTimeString()}`;
  openStream();
  loadConnections("");
  window.addEventListener("resize", drawChart);
}

// What the browser test reads (the chart's points).
window.adminConsole = {
  get series() {
    return series;
  },
};

start().catch((e) => status(e.message, "error"));
