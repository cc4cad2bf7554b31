// End to end in headless Chromium: the admin console served by `boundary-realtime dev`. A
// wrong key is refused on the page; the right one signs in; a WebSocket opened by the test
// appears under its user, is disconnected from the page with the chosen code and reason (the
// client sees exactly that close) and its row goes; the totals and the chart move while
// messages flow; send and publish from the page reach a client; a user's every connection is
// disconnected after a confirmation; sign-out. Saves a screenshot to
// target/e2e/admin.png, or to ADMIN_SCREENSHOT (docs/admin.png is made with
// ADMIN_SCREENSHOT=../../docs/admin.png npm run test:e2e).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { chromium } from "playwright-core";
import { startServer, until, msg } from "../test/harness.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

let server;
let browser;
before(async () => {
  server = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});
after(async () => {
  await browser?.close();
  server?.stop();
});

/** A raw WebSocket client of `user`, subscribed to `topics`: its frames and, once closed,
 * its close code and reason. */
async function socket(user, topics = []) {
  const ws = new WebSocket(`${server.ws}?token=${server.token(user, { topics })}`);
  const c = { ws, frames: [], closed: null };
  ws.on("message", (d) => c.frames.push(JSON.parse(d.toString())));
  ws.on("close", (code, reason) => (c.closed = { code, reason: reason.toString() }));
  await until(`${user} connected`, () => c.frames.some((f) => f.op === "connected"));
  c.id = c.frames.find((f) => f.op === "connected").connection_id;
  for (const topic of topics) {
    ws.send(JSON.stringify({ op: "subscribe", topic, ref: topic }));
    await until(`${user} subscribed to ${topic}`, () =>
      c.frames.some((f) => f.op === "subscribed" && f.topic === topic),
    );
  }
  return c;
}

test("sign in, watch a connection appear, disconnect it from the page, see messages flow", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const pageErrors = [];
  const failed = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("response", (r) => r.status() >= 400 && failed.push(`${r.status()} ${r.url()}`));

  // Without a session the console leads to the sign-in page; a wrong key says so.
  await page.goto(server.adminUrl);
  assert.equal(new URL(page.url()).pathname, "/admin/sign-in");
  await page.fill("#key", "not-the-key-0123456789");
  await page.click("#submit");
  await page.waitForSelector("#error:not([hidden])");
  assert.equal(await page.textContent("#error"), "Wrong API key.");
  failed.length = 0; // that 401 was the point

  const started = Date.now();
  await page.fill("#key", server.apiKey);
  await page.click("#submit");
  await page.waitForURL(server.adminUrl);
  await page.waitForSelector('#live[data-state="live"]');
  await page.waitForSelector('#nodes tr[data-node="dev"]');
  const firstRender = Date.now() - started;
  const html = await page.content();
  assert.ok(!html.includes(server.apiKey), "the key is nowhere in the page");

  // A connection opened now appears under its user, with its fields.
  const client = await socket("ada", ["news"]);
  const row = `#connections tr[data-conn="${client.id}"]`;
  await page.waitForSelector(row);
  assert.equal(await page.getAttribute(row, "data-user"), "ada");
  assert.equal(await page.textContent(`${row} td:nth-child(2)`), "ada");
  assert.equal(await page.textContent(`${row} td:nth-child(13)`), "native");
  await page.waitForSelector('#feed li[data-kind="CONNECTED"][data-user="ada"]');
  await page.waitForSelector('#feed li[data-kind="USER_ONLINE"][data-user="ada"]');
  await page.waitForSelector('[data-total="connections"]:has-text("1")');

  // Messages flow: the sent rate and the chart move.
  const before = await page.evaluate(() => window.adminConsole.series.length);
  for (let i = 0; i < 50; i++) {
    await server.call("SendToUser", { user_id: "ada", message: msg("tick", { i }) });
  }
  await page.waitForFunction(() => window.adminConsole.series.some((p) => p.sentPerSec > 0));
  assert.ok((await page.evaluate(() => window.adminConsole.series.length)) > before);
  const sentShown = await page.evaluate(() =>
    Math.max(...window.adminConsole.series.map((p) => p.sentPerSec)),
  );
  assert.ok(sentShown > 0, `sent per second on the chart: ${sentShown}`);

  // Send to a user and publish from the page; the client receives both.
  await page.fill("#s-user", "ada");
  await page.fill("#s-type", "from-admin");
  await page.fill("#s-payload", '{"text":"hello from the console"}');
  await page.click("#send button");
  await page.waitForSelector('#status:has-text("Sent to ada: 1 connection(s).")');
  await until("the direct message", () => client.frames.some((f) => f.type === "from-admin"));
  assert.deepEqual(client.frames.find((f) => f.type === "from-admin").payload, { text: "hello from the console" });
  await page.fill("#p-topic", "news");
  await page.fill("#p-type", "headline");
  await page.fill("#p-payload", '{"n":1}');
  await page.click("#publish button");
  await page.waitForSelector('#status:has-text("Published to news: offset 1, 1 connection(s).")');
  await until("the publication", () => client.frames.some((f) => f.type === "headline"));

  // The topic's view: its counts, presence and latest history.
  await page.fill("#t-name", "news");
  await page.click("#topic button");
  await page.waitForSelector('#t-counts:has-text("1 subscriber connection(s), 1 user(s)")');
  await page.waitForSelector(`#t-presence li[data-conn="${client.id}"]`);
  await page.waitForSelector('#t-history li[data-offset="1"]');

  const shot = process.env.ADMIN_SCREENSHOT
    ? path.resolve(process.env.ADMIN_SCREENSHOT)
    : path.join(root, "target/e2e/admin.png");
  await page.screenshot({ path: shot, fullPage: true });

  // Disconnect it from the page with a chosen code and reason.
  await page.click(`${row} button`);
  await page.fill("#c-code", "4321");
  await page.fill("#c-reason", "closed from the console");
  await page.click("#c-ok");
  await until("the client closed", () => client.closed !== null);
  assert.deepEqual(client.closed, { code: 4321, reason: "closed from the console" });
  await page.waitForSelector(row, { state: "detached" });
  await page.waitForSelector('#status:has-text("1 connection(s) closed with 4321")');
  await page.waitForSelector('#feed li[data-kind="DISCONNECTED"][data-user="ada"]:has-text("4321")');

  // Every connection of a user, after the same confirmation.
  const eve = [await socket("eve"), await socket("eve")];
  await page.fill("#k-user", "eve");
  await page.fill("#k-code", "4005");
  await page.fill("#k-reason", "all of eve");
  await page.click("#kick button");
  await page.waitForSelector("#confirm[open]");
  assert.equal(await page.textContent("#c-target"), "every connection of eve");
  await page.click("#c-ok");
  await until("eve's connections closed", () => eve.every((c) => c.closed !== null));
  for (const c of eve) assert.deepEqual(c.closed, { code: 4005, reason: "all of eve" });
  await page.waitForSelector('#status:has-text("Disconnected user eve: 2 connection(s) closed with 4005.")');

  assert.deepEqual(pageErrors, []);
  assert.deepEqual(failed, [], "no request failed");
  console.log(`# admin console: first render after sign-in ${firstRender} ms`);

  // Sign out: back to the sign-in page, and the console opens nothing any more.
  await page.click("#sign-out");
  await page.waitForURL(/\/admin\/sign-in$/);
  const after = await page.evaluate(async (base) => (await fetch(`${base}/api/session`)).status, "/admin");
  assert.equal(after, 401);
  await page.close();
});
