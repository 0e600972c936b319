// The browser test: a page using @stomp/stompjs over WebSocket in Debian's
// Chromium (driven by playwright-core) subscribes to a topic and publishes;
// a Node.js MQTT client (npm mqtt, over WebSocket) publishes into the same
// topic. The page must show both. A screenshot is kept as an artefact.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import mqtt from "mqtt";

const here = path.dirname(fileURLToPath(import.meta.url));
const httpAddr = process.env.HTTP_ADDR;
const artifacts = process.env.ARTIFACTS || path.join(here, "..", "artifacts");
fs.mkdirSync(artifacts, { recursive: true });

const files = {
  "/": ["text/html", path.join(here, "page.html")],
  "/stomp.umd.min.js": ["text/javascript", path.join(here, "node_modules/@stomp/stompjs/bundles/stomp.umd.min.js")],
};
const server = http.createServer((req, res) => {
  const f = files[new URL(req.url, "http://x").pathname];
  if (!f) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { "Content-Type": f[0] });
  fs.createReadStream(f[1]).pipe(res);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const pageURL = `http://127.0.0.1:${server.address().port}/?ws=${encodeURIComponent(`ws://${httpAddr}/ws`)}`;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.log("page:", m.text()));
  await page.goto(pageURL);
  await page.waitForFunction(() => window.bourseReady === true, null, { timeout: 15000 });

  const client = await mqtt.connectAsync(`ws://${httpAddr}/mqtt`, { username: "guest", password: "guest", protocolVersion: 5 });
  await client.publishAsync("browser/in", "hello from mqtt over websocket", {
    qos: 1, properties: { userProperties: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" } },
  });
  await page.waitForFunction(() => document.body.innerText.includes("received: hello from mqtt over websocket"), null, { timeout: 15000 });
  await page.waitForFunction(() => document.body.innerText.includes("echo: hello from the browser"), null, { timeout: 15000 });
  const text = await page.innerText("body");
  if (!text.includes("traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736")) throw new Error("traceparent lost:\n" + text);
  await page.screenshot({ path: path.join(artifacts, "stomp-websocket-browser.png") });
  await client.endAsync();
  console.log("ok");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
