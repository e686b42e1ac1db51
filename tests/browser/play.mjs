// Drive 06_play.ipynb in JupyterLab with headless Chromium: run all cells, draw a stroke with the mouse,
// wait for the network's answer, take a screenshot. Called by tests/test_browser.py, which starts the server:
//
//     CHROMIUM=/usr/bin/chromium node tests/browser/play.mjs URL TOKEN SCREENSHOT.png
//
// CHROMIUM: the browser to drive (default Debian's /usr/bin/chromium); never a downloaded one.
// Prints one JSON line: the answer's class, the probability bars before and after the stroke, timings.
import { chromium } from "playwright-core";

const [url, token, screenshot] = process.argv.slice(2);
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: FLAGS });
const result = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(Number(process.env.PLAY_TIMEOUT_MS || 90_000));
  await page.goto(`${url}/lab/tree/06_play.ipynb?token=${token}`);
  await page.waitForFunction(() => window.jupyterapp && window.jupyterapp.shell.currentWidget);
  // the kernel must be idle before the cells run, else run-all waits on a starting kernel
  await page.waitForFunction(() => {
    const panel = window.jupyterapp.shell.currentWidget;
    return panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel
      && panel.sessionContext.session.kernel.status === "idle";
  });
  const started = Date.now();
  await page.evaluate(() => window.jupyterapp.commands.execute("notebook:run-all-cells"));
  // the last cell clears the pad after drawing from code: wait for the blank pad's prompt
  const canvas = page.locator("canvas.mnist-canvas, .mnist-canvas canvas").last();  // ipycanvas: the widget's element or its child
  await canvas.waitFor({ state: "visible" });
  await page.waitForFunction(() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const ran = panel.content.widgets.every((cell) => cell.model.type !== "code" || cell.model.executionCount);
    return ran && panel.sessionContext.session.kernel.status === "idle"
      && [...document.querySelectorAll(".mnist-prediction")].some((e) => e.textContent.includes("Draw a digit"));
  });
  result.run_all_seconds = (Date.now() - started) / 1000;
  const bars = () => page.$$eval(".mnist-bar", (rows) => rows.map((r) => Number(r.dataset.p)));
  result.before = await bars();

  // a vertical stroke down the middle of the canvas, as a person draws a one
  await canvas.scrollIntoViewIfNeeded();
  const box = await canvas.boundingBox();
  const x = box.x + box.width / 2;
  await page.mouse.move(x, box.y + 0.15 * box.height);
  await page.mouse.down();
  for (let i = 1; i <= 20; i++) {
    await page.mouse.move(x, box.y + (0.15 + 0.7 * i / 20) * box.height);
  }
  await page.mouse.up();
  await page.waitForFunction(() => document.querySelector(".mnist-prediction [data-class]"));
  result.answer = await page.$eval(".mnist-prediction [data-class]", (e) => ({ cls: Number(e.dataset.class), text: e.textContent }));
  result.after = await bars();
  await canvas.evaluate((e) => e.closest(".jp-Cell").scrollIntoView());
  await page.screenshot({ path: screenshot });
} catch (error) {
  // what the page showed when it failed, for the test's report
  const page = browser.contexts()[0]?.pages()[0];
  if (page) {
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png") }).catch(() => {});
    const outputs = await page.$$eval(".jp-OutputArea-output", (els) => els.map((e) => e.textContent.slice(0, 300))).catch(() => []);
    console.error("cell outputs:", JSON.stringify(outputs));
  }
  throw error;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
