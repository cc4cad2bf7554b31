// End to end in headless Chromium (Debian's, driven by playwright-core): the demo page served
// by `boundary-realtime dev` connects with the dev token, shows a message sent over gRPC, and
// after the server drops its socket reconnects and recovers the topic publications it missed.
// Saves a screenshot to target/e2e/demo.png, or to DEMO_SCREENSHOT (the README's picture is
// made with DEMO_SCREENSHOT=../../docs/demo.png npm run test:e2e).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer, msg } from "../test/harness.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

let server;
let browser;
before(async () => {
  server = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});
after(async () => {
  await browser?.close();
  server?.stop();
});

test("the demo page connects, shows a gRPC message, and recovers missed publications after a drop", async () => {
  const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
  const pageErrors = [];
  const notFound = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("response", (r) => r.status() >= 400 && notFound.push(`${r.status()} ${r.url()}`));
  await page.goto(server.demoUrl);
  await page.waitForSelector('#state[data-state="connected"]', { timeout: 10000 });
  // It subscribed to "news" by itself (the topic the dev banner publishes to).
  await page.waitForSelector('#topics li[data-topic="news"]');
  // The footer's curl command names this page's user and this node's address.
  const example = await page.textContent("#send-example");
  assert.match(example, /"user_id":"dev-user"/);
  assert.ok(example.includes(`${new URL(server.demoUrl).origin}/api/v1/SendToUser`), example);

  // A direct message over gRPC appears on the page.
  const sent = await server.call("SendToUser", {
    user_id: "dev-user",
    message: msg("hello", { text: "hi from gRPC" }),
  });
  assert.equal(sent.connections, 1);
  await page.waitForSelector('#messages li[data-kind="hello"]:has-text("hi from gRPC")');

  // A publication to news arrives; the form subscribes to another topic.
  await server.call("Publish", { topic: "news", message: msg("headline", { n: 1 }) });
  await page.waitForSelector('#messages li[data-kind="news#1"]');
  assert.match(await page.textContent('#messages li[data-kind="news#1"] time'), /\d:\d\d/);
  await page.fill("#topic", "orders:42");
  await page.click("#subscribe");
  await page.waitForSelector('#topics li[data-topic="orders:42"]');

  // Hold the page's next token request, so the publications below happen while it is away.
  await page.evaluate((token) => {
    const c = window.demo.client;
    c.options.getToken = () => new Promise((r) => (window.releaseToken = () => r(token)));
  }, server.devToken);
  const first = await page.textContent("#conn");
  await server.call("Disconnect", { connection_id: first, code: 4008, reason: "test drop" });
  await page.waitForSelector('#state:not([data-state="connected"])');
  await server.call("Publish", { topic: "news", message: msg("headline", { n: 2 }) });
  await server.call("Publish", { topic: "news", message: msg("headline", { n: 3 }) });
  const away = await server.call("SendToUser", {
    user_id: "dev-user",
    message: msg("hello", { text: "sent while away" }),
  });
  assert.equal(away.connections, 0);
  await page.waitForFunction(() => typeof window.releaseToken === "function");
  await page.evaluate(() => window.releaseToken());
  await page.waitForSelector('#state[data-state="connected"]');
  await page.waitForSelector('#messages li[data-kind="news#3"]');
  // The direct message sent while away arrives, and the page says nothing was missed.
  await page.waitForSelector('#messages li[data-kind="hello"]:has-text("sent while away")');
  await page.waitForSelector('#messages li[data-kind="recovered"]');

  const kinds = await page.$$eval("#messages li", (lis) => lis.map((li) => li.dataset.kind).reverse());
  assert.deepEqual(
    kinds.filter((k) => k.startsWith("news#")),
    ["news#1", "news#2", "news#3"],
  );
  assert.ok(!kinds.includes("unrecovered"), kinds.join(","));
  assert.notEqual(await page.textContent("#conn"), first);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(notFound, [], "no request failed (the favicon included)");
  const shot = process.env.DEMO_SCREENSHOT
    ? path.resolve(process.env.DEMO_SCREENSHOT)
    : path.join(root, "target/e2e/demo.png");
  await page.screenshot({ path: shot });
});

test("a page that missed more than its user stream keeps says so after a reload", async () => {
  const page = await browser.newPage();
  await page.goto(server.demoUrl);
  await page.waitForSelector('#state[data-state="connected"]', { timeout: 10000 });
  // A position the server never gave (another epoch): the resume cannot be proven.
  await page.evaluate(() =>
    sessionStorage.setItem("boundary-realtime-demo-position", JSON.stringify({ offset: 1, epoch: "gone" })),
  );
  await page.reload();
  await page.waitForSelector('#state[data-state="connected"]', { timeout: 10000 });
  await page.waitForSelector('#messages li[data-kind="unrecovered"]:has-text("direct messages")');
  await page.close();
});

test("a refused token is not retried: the page asks for another, then connects with it", async () => {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  let upgrades = 0;
  page.on("websocket", () => upgrades++);
  await page.goto(server.demoUrl.replace(/#token=.*/, "#token=not-a-token"));
  await page.waitForSelector("#token-form:not([hidden])");
  assert.match(await page.textContent("#refused"), /refused the token/);
  await page.waitForSelector('#state[data-state="closed"]');
  // Given time to retry, it does not.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(upgrades, 1);
  assert.equal(await page.locator('#messages li[data-kind="error"]').count(), 1);
  await page.fill("#token", server.devToken);
  await page.click("#token-form button");
  await page.waitForSelector('#state[data-state="connected"]');
  await page.waitForSelector('#topics li[data-topic="news"]');
  // Clear empties the list.
  await page.click("#clear");
  assert.equal(await page.locator("#messages li").count(), 0);
  assert.equal(await page.textContent("#count"), "(0)");
  assert.deepEqual(pageErrors, []);
});
