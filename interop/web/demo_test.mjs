// The demo page in Debian's Chromium: it connects to Bourse over
// STOMP/WebSocket and must show live payments, invoices and telemetry from
// the demo services. The screenshot is kept as interop/artifacts/demo-dashboard.png.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const artifacts = process.env.ARTIFACTS || path.join(here, "..", "artifacts");
fs.mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  page.on("console", (m) => console.log("page:", m.text()));
  await page.goto(`http://${process.env.DASHBOARD_ADDR}/`);
  await page.waitForFunction(() => window.demoConnected === true, null, { timeout: 20000 });
  await page.waitForFunction(() =>
    document.querySelectorAll("#payments li").length >= 2 &&
    document.querySelectorAll("#invoices li").length >= 1 &&
    document.querySelectorAll("#telemetry .sensor").length === 3, null, { timeout: 30000 });
  await page.screenshot({ path: path.join(artifacts, "demo-dashboard.png") });
  console.log("demo page: payments, invoices and telemetry shown live");
} catch (e) {
  failed = true;
  console.error("demo page test failed:", e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
