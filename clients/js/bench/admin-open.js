// Holds the admin console open in headless Chromium for scripts/admin_budget.sh: signs in,
// waits for the live stream and the first page of connections, prints
// `ready <first render ms>`, stays SECONDS, then closes.
// Usage: node bench/admin-open.js ADMIN_URL API_KEY SECONDS
import { chromium } from "playwright-core";

const [url, key, seconds] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  await page.goto(`${url}/sign-in`);
  await page.fill("#key", key);
  const started = Date.now();
  await page.click("#submit");
  await page.waitForURL(url);
  await page.waitForSelector('#live[data-state="live"]');
  await page.waitForSelector("#nodes tbody tr");
  await page.waitForSelector("#connections tbody tr");
  console.log(`ready ${Date.now() - started}`);
  await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
} finally {
  await browser.close();
}
