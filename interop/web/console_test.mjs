// The console's browser test: Debian's Chromium (playwright-core) signs in
// to the web console served by the broker, declares a stream, publishes
// through the console, sees the queue tables and the overview, reads the
// stream back decoded from the fetch endpoint, and keeps screenshots.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const base = `http://${process.env.HTTP_ADDR}`;
const artifacts = process.env.ARTIFACTS || path.join(here, "..", "artifacts");
fs.mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(base + "/");
  await page.waitForSelector("#login:not([hidden])");
  await page.fill('#login input[name="pass"]', "guest");
  await page.click('#login button[type="submit"]');
  await page.waitForFunction(() => document.querySelector("#who").textContent === "guest");

  // Declare a stream and a queue from the console.
  await page.goto(base + "/console/#queues");
  for (const [name, type] of [["console-events", "stream"], ["console-jobs", "classic"]]) {
    await page.fill('#declare-queue input[name="name"]', name);
    await page.selectOption('#declare-queue select[name="type"]', type);
    await page.click('#declare-queue button[type="submit"]');
    await page.waitForSelector(`#queue-table td:text-is("${name}")`);
  }
  // Publish three events into the stream and a job into the queue.
  await page.goto(base + "/console/#publish");
  for (const [key, body] of [["console-events", "first event"], ["console-events", "second event"], ["console-events", "third event"], ["console-jobs", "a job"]]) {
    await page.fill('#publish-form input[name="key"]', key);
    await page.fill('#publish-form textarea[name="payload"]', body);
    await page.click('#publish-form button[type="submit"]');
    await page.waitForFunction(() => document.querySelector("#publish-result").textContent === "Routed.");
    await page.evaluate(() => { document.querySelector("#publish-result").textContent = ""; });
  }
  // Queue table: filter, counts, peek.
  await page.goto(base + "/console/#queues");
  await page.fill("#queue-filter", "jobs");
  await page.waitForFunction(() => document.querySelectorAll("#queue-table tbody tr").length === 1);
  const ready = await page.textContent("#queue-table tbody tr td:nth-child(4)");
  if (ready.trim() !== "1") throw new Error(`ready count ${ready}`);
  await page.click('#queue-table tbody tr button:text-is("Peek")');
  await page.waitForFunction(() => document.querySelector("#peek-body").textContent.includes("a job"));
  // Read the stream from the first offset.
  await page.goto(base + "/console/#stream");
  await page.fill('#stream-form input[name="stream"]', "console-events");
  await page.fill('#stream-form input[name="offset"]', "first");
  await page.click('#stream-form button[type="submit"]');
  await page.waitForFunction(() => document.querySelectorAll("#record-table tbody tr").length === 3);
  const bodies = await page.$$eval("#record-table tbody tr td:nth-child(4)", (tds) => tds.map((t) => t.textContent));
  if (bodies.join("|") !== "first event|second event|third event") throw new Error(`stream bodies ${bodies}`);
  await page.screenshot({ path: path.join(artifacts, "console-stream.png") });
  // Connections: an MQTT client shows up and is closed from the console.
  const mqttMod = await import("mqtt");
  const mc = mqttMod.default.connect(`ws://${process.env.HTTP_ADDR}/mqtt`, { clientId: "console-device", username: "guest", password: "guest", protocolVersion: 5, reconnectPeriod: 0 });
  await new Promise((res, rej) => { mc.on("connect", res); mc.on("error", rej); });
  const closed = new Promise((res) => mc.on("close", res));
  await page.goto(base + "/console/#connections");
  await page.waitForSelector('#connection-table td:text-is("MQTT 5.0")');
  page.on("dialog", (d) => d.accept());
  await page.click('#connection-table tbody tr:has(td:text-is("MQTT 5.0")) button:text-is("Close")');
  await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error("MQTT client not closed")), 10000))]);
  mc.end(true);
  // Overview with live numbers.
  await page.goto(base + "/console/#overview");
  await page.waitForFunction(() => document.querySelector("#totals").textContent.includes("Queues"));
  await page.waitForTimeout(4500); // a few samples for the rate chart
  await page.screenshot({ path: path.join(artifacts, "console-overview.png") });
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log("console: declared, published, peeked and read a stream; screenshots in", artifacts);
} catch (e) {
  failed = true;
  console.error("console test failed:", e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
