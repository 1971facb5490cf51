// Drives hearth's web page in headless Chromium. Run by crates/cli/tests/web_page.rs, which
// starts `hearth serve` and passes everything through the environment:
//   E2E_SCENARIO        "main" (chat, stream, stop, reload, XSS, conversations) or "key"
//   E2E_BASE            the server, e.g. http://127.0.0.1:PORT
//   E2E_MODEL           the store model to pick (and the page's default)
//   E2E_BASE_MODEL      a base model in the store, listed first: labelled, never the default
//   E2E_API_KEY         the key the server wants ("key" scenario)
//   E2E_OUT             where screenshots go
//   E2E_CHROMIUM        the browser binary
//   E2E_PLAYWRIGHT_DIR  a directory whose node_modules holds playwright-core
// Prints "scenario NAME passed" at the end; any failure exits non-zero with the reason.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";

const env = (name) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const scenario = env("E2E_SCENARIO");
const base = env("E2E_BASE");
const model = env("E2E_MODEL");
const baseModel = env("E2E_BASE_MODEL");
const outDir = env("E2E_OUT");
const require = createRequire(path.join(env("E2E_PLAYWRIGHT_DIR"), "package.json"));
const { chromium } = require("playwright-core");

const XSS = "<img src=x onerror=alert(1)>";
const watchdog = setTimeout(() => {
  console.error(`scenario ${scenario} took longer than 8 minutes`);
  process.exit(3);
}, 8 * 60 * 1000);

function log(...args) {
  console.log(`[${scenario}]`, ...args);
}

// Playwright gives the browser a fresh temporary profile (--user-data-dir) of its own.
const browser = await chromium.launch({
  executablePath: env("E2E_CHROMIUM"),
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
  ],
});

// Problems the page reports (script errors, CSP violations, alert dialogs).
const problems = [];
const dialogs = [];

let activePage = null;

async function openPage(context) {
  const page = await context.newPage();
  activePage = page;
  page.setDefaultTimeout(30000);
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // Network failures the page handles itself (a 401 before the key is given) are logged
    // by the browser as "Failed to load resource"; script errors and CSP violations are not.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  page.on("dialog", async (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    await d.dismiss();
  });
  // The page must not reach anything but this server.
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(base) || url.startsWith("blob:") || url.startsWith("data:")) return route.fallback();
    problems.push(`request outside the server: ${url}`);
    return route.abort();
  });
  return page;
}

async function pickModel(page) {
  const select = page.locator("#model");
  await page.waitForFunction(
    (name) => [...document.querySelectorAll("#model option")].some((o) => o.value.startsWith(name)),
    model,
    { timeout: 30000 },
  );
  const value = await select.evaluate(
    (s, name) => [...s.options].find((o) => o.value === name || o.value.startsWith(`${name}:`)).value,
    model,
  );
  await select.selectOption(value);
  // The size comes with the list; the quantization is filled in from /api/show.
  await page.waitForFunction(() => / · Q\d|F16|F32|BF16/.test(document.querySelector("#model").selectedOptions[0].textContent));
  const label = await select.evaluate((s) => s.selectedOptions[0].textContent);
  log("model option:", label);
  assert.match(label, /\d+(\.\d+)? (MB|GB|KB)/, "the model picker shows the size");
  return value;
}

// What the page picks by itself: the default model, not the base model listed before it,
// which is labelled "base".
async function checkDefaultModel(page) {
  const matches = (value, name) => value === name || value.startsWith(`${name}:`);
  await page.waitForFunction(
    ([a, b]) => {
      const values = [...document.querySelectorAll("#model option")].map((o) => o.value);
      return [a, b].every((n) => values.some((v) => v === n || v.startsWith(`${n}:`)));
    },
    [model, baseModel],
    { timeout: 30000 },
  );
  const options = await page.locator("#model option").evaluateAll((os) =>
    os.map((o) => ({ value: o.value, label: o.textContent, title: o.title })),
  );
  const selected = await page.locator("#model").inputValue();
  log("models:", options.map((o) => o.label).join(" | "), "selected:", selected);
  assert.ok(matches(options[0].value, baseModel), "the base model is listed first");
  assert.ok(matches(selected, model), `the page picks ${model} by default, not ${selected}`);
  const base = options.find((o) => matches(o.value, baseModel));
  assert.match(base.label, / · base$/, "the base model is labelled as one");
  assert.match(base.title, /Base model/);
  const chat = options.find((o) => matches(o.value, model));
  assert.doesNotMatch(chat.label, /base/);
}

async function setSettings(page, values) {
  await page.click("#open-settings");
  await page.locator("#settings").waitFor({ state: "visible" });
  for (const [id, value] of Object.entries(values)) await page.fill(id, String(value));
  await page.click("#close-settings");
  await page.locator("#settings").waitFor({ state: "hidden" });
}

async function sendMessage(page, text) {
  await page.fill("#prompt", text);
  await page.press("#prompt", "Enter");
}

const lastAnswer = (page) => page.locator("#messages .msg.assistant").last();

async function answerText(page) {
  return (await lastAnswer(page).locator(".msg-body").textContent()).replace(/▍$/, "");
}

async function waitForAnswerDone(page) {
  await page.locator("#send").waitFor({ state: "visible", timeout: 180000 });
  await page.locator("#stop").waitFor({ state: "hidden" });
  return (await lastAnswer(page).locator(".stats").textContent()) || "";
}

async function screenshot(page, name) {
  const file = path.join(outDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  console.log(`screenshot: ${file}`);
}

function checkProblems() {
  assert.deepEqual(problems, [], "the page reported problems");
  assert.deepEqual(dialogs, [], "no dialog may open (an alert would mean script ran)");
}

async function mainScenario() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await openPage(context);
  await page.goto(base);
  const csp = (await page.request.get(base)).headers()["content-security-policy"];
  assert.ok(csp && csp.includes("default-src 'self'"), `CSP header: ${csp}`);
  await checkDefaultModel(page);
  await pickModel(page);

  // Greedy decoding with a large budget: a long answer, so it is still streaming when stopped.
  await setSettings(page, { "#set-temperature": 0, "#set-max-tokens": 1500, "#set-seed": 7 });
  const question = "Write a long story about a dragon who learns to bake bread, with many chapters.";
  await sendMessage(page, question);
  await page.locator("#stop").waitFor({ state: "visible" });
  await page.waitForFunction(
    () => {
      const body = [...document.querySelectorAll("#messages .msg.assistant .msg-body")].pop();
      return body && body.textContent.replace(/▍$/, "").length > 0;
    },
    null,
    { timeout: 180000 },
  );
  // Sample the text as it streams: it must keep growing while the answer is under way.
  const samples = [await answerText(page)];
  for (const atLeast of [20, 60]) {
    await page.waitForFunction(
      (n) => {
        const body = [...document.querySelectorAll("#messages .msg.assistant .msg-body")].pop();
        return body.textContent.replace(/▍$/, "").length >= n;
      },
      atLeast,
      { timeout: 60000 },
    );
    samples.push(await answerText(page));
  }
  log("streamed lengths:", samples.map((s) => s.length).join(" < "));
  for (let i = 1; i < samples.length; i++) {
    assert.ok(samples[i].length > samples[i - 1].length, "the answer grows while it streams");
  }
  assert.ok(await page.locator("#stop").isVisible(), "the answer was still streaming when Stop was due");
  await page.click("#stop");
  let stats = await waitForAnswerDone(page);
  log("stopped answer stats:", stats);
  assert.match(stats, /stopped/);
  assert.match(stats, /first token \d/);
  const stoppedText = await answerText(page);
  assert.ok(stoppedText.length >= samples[samples.length - 1].length);
  // Nothing more arrives after Stop.
  await page.waitForTimeout(1500);
  assert.equal(await answerText(page), stoppedText, "no text arrives after Stop");

  // A short answer that runs to its end shows the full statistics.
  await setSettings(page, { "#set-max-tokens": 16 });
  await sendMessage(page, "Say hello in one short sentence.");
  stats = await waitForAnswerDone(page);
  log("complete answer stats:", stats);
  assert.match(stats, /first token \d/);
  assert.match(stats, /[\d.]+ tokens\/s/);
  assert.match(stats, /\d+ prompt tokens/);
  assert.match(stats, /\d+ answer tokens/);

  // Reload: the conversation is still there, from the browser's storage.
  await page.reload();
  await pickModel(page);
  const title = page.locator("#conversations .conv.active .conv-title");
  assert.equal(await title.textContent(), question.slice(0, 60));
  const userTexts = await page.locator("#messages .msg.user .msg-body").allTextContents();
  assert.deepEqual(userTexts, [question, "Say hello in one short sentence."]);
  const answers = await page.locator("#messages .msg.assistant .msg-body").allTextContents();
  assert.equal(answers.length, 2);
  assert.equal(answers[0], stoppedText, "the stopped answer was kept");
  log("after reload: conversation found with", answers.length, "answers");
  await screenshot(page, "web-desktop-chat");

  // Rename it.
  await page.locator("#conversations .conv.active").getByRole("button", { name: "Rename" }).click();
  await page.fill("#conversations input.rename", "Counting test");
  await page.press("#conversations input.rename", "Enter");
  assert.equal(await title.textContent(), "Counting test");

  // A model answer (and a user message) carrying HTML must show as text. The answer is
  // served by an intercepted /api/chat so its content is certain.
  const answer = [
    `Here it is: ${XSS} and **bold** with \`${XSS}\``,
    "",
    "```html",
    XSS,
    "<script>alert(2)</script>",
    "```",
    "",
    "- [a link](javascript:alert(3))",
    "- [a good link](https://example.com/docs)",
  ].join("\n");
  await page.route("**/api/chat", async (route) => {
    const pieces = answer.match(/[\s\S]{1,7}/g);
    const lines = pieces.map((p) => JSON.stringify({ model, message: { role: "assistant", content: p }, done: false }));
    lines.push(JSON.stringify({
      model, message: { role: "assistant", content: "" }, done: true, done_reason: "stop",
      total_duration: 120000000, load_duration: 1000000, prompt_eval_count: 12, prompt_eval_duration: 20000000,
      eval_count: pieces.length, eval_duration: 100000000,
    }));
    await route.fulfill({ status: 200, contentType: "application/x-ndjson", body: lines.join("\n") + "\n" });
  });
  await page.click("#new-chat");
  await sendMessage(page, `Please repeat ${XSS}`);
  await waitForAnswerDone(page);
  await page.unroute("**/api/chat");
  const userText = await page.locator("#messages .msg.user .msg-body").last().textContent();
  assert.equal(userText, `Please repeat ${XSS}`, "user text is shown literally");
  const shown = await answerText(page);
  assert.ok(shown.includes(`Here it is: ${XSS} and bold with ${XSS}`), `answer shown as text: ${shown}`);
  assert.ok(shown.includes("<script>alert(2)</script>"));
  assert.equal(await page.locator("#messages img").count(), 0, "no <img> in the messages");
  assert.equal(await page.locator("#messages script").count(), 0, "no <script> in the messages");
  assert.equal(await page.locator("#messages strong").count(), 1, "Markdown bold is rendered");
  assert.equal(await page.locator("#messages figure.code button.copy").count(), 1, "code block with a copy button");
  assert.equal(await page.locator("#messages figure.code code").textContent(), `${XSS}\n<script>alert(2)</script>`);
  const hrefs = await page.locator("#messages a").evaluateAll((as) => as.map((a) => [a.href, a.rel]));
  assert.deepEqual(hrefs, [["https://example.com/docs", "noopener noreferrer nofollow"]], "only http(s) links");
  await page.waitForTimeout(300);
  checkProblems();
  log("XSS payload shown as text; no image, no script, no dialog");
  await screenshot(page, "web-desktop");

  // Export every conversation as JSON.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export-all")]);
  const exported = JSON.parse(readFileSync(await download.path(), "utf8"));
  assert.equal(exported.format, "hearth-conversations");
  assert.equal(exported.conversations.length, 2);
  assert.ok(exported.conversations.some((c) => c.title === "Counting test"));
  log("exported", exported.conversations.length, "conversations as", download.suggestedFilename());

  // A phone-sized screen: the chat fits, the list opens as a drawer.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow}px too wide)`);
  assert.ok(await page.locator("#prompt").isVisible());
  await screenshot(page, "web-phone");
  await page.click("#toggle-sidebar");
  await page.locator("#sidebar").getByRole("button", { name: "Counting test" }).waitFor({ state: "visible" });
  await page.waitForTimeout(300);
  await screenshot(page, "web-phone-list");

  // Delete the XSS conversation (two steps, no native dialog).
  await page.locator("#conversations .conv.active").getByRole("button", { name: "Delete" }).click();
  await page.locator("#conversations .confirm").getByRole("button", { name: "Delete" }).click();
  assert.equal(await page.locator("#conversations .conv").count(), 1);
  await page.reload();
  assert.equal(await page.locator("#conversations .conv").count(), 1, "the deletion is kept");
  checkProblems();
  await context.close();
}

async function keyScenario() {
  const key = env("E2E_API_KEY");
  assert.ok(key, "the key scenario needs E2E_API_KEY");
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await openPage(context);
  let unauthorized = 0;
  page.on("response", (r) => {
    if (r.status() === 401) unauthorized += 1;
  });
  await page.goto(base);
  // The page itself loaded without the key; the model list needs it, so the page asks.
  await page.locator("#key-dialog").waitFor({ state: "visible" });
  await screenshot(page, "web-key-dialog");
  await page.fill("#key-input", key);
  await page.click("#key-save");
  await page.locator("#key-dialog").waitFor({ state: "hidden" });
  await pickModel(page);
  await setSettings(page, { "#set-max-tokens": 12 });
  await sendMessage(page, "Say hello.");
  const stats = await waitForAnswerDone(page);
  log("answer with the key:", JSON.stringify(await answerText(page)), stats);
  assert.match(stats, /\d+ answer tokens/);
  assert.ok((await answerText(page)).length > 0);

  // Reloaded, the page remembers the key: no second question.
  await page.reload();
  await pickModel(page);
  await sendMessage(page, "Say hello again.");
  await waitForAnswerDone(page);
  assert.equal(await page.locator("#key-dialog").isVisible(), false);
  assert.equal(unauthorized, 1, "the key was asked for once (one 401), then sent every time");

  // Structured output: a schema in the settings makes the answer JSON that follows it; a
  // schema that is not JSON is refused in the dialog.
  await page.click("#new-chat");
  await page.click("#open-settings");
  await page.locator("#settings").waitFor({ state: "visible" });
  await page.selectOption("#set-format", "schema");
  await page.fill("#set-schema", "{not json");
  await page.click("#close-settings");
  await page.locator("#settings-error").waitFor({ state: "visible" });
  assert.match(await page.locator("#settings-error").textContent(), /not valid JSON/);
  const schema = {
    type: "object",
    properties: { city: { type: "string", enum: ["Paris", "London", "Rome"] }, sure: { type: "boolean" } },
    required: ["city", "sure"],
    additionalProperties: false,
  };
  await page.fill("#set-schema", JSON.stringify(schema));
  await page.fill("#set-max-tokens", "64");
  await page.click("#close-settings");
  await page.locator("#settings").waitFor({ state: "hidden" });
  await sendMessage(page, "What is the capital of France? Answer in JSON.");
  const jsonStats = await waitForAnswerDone(page);
  const jsonText = await answerText(page);
  log("answer with a schema:", JSON.stringify(jsonText), jsonStats);
  const parsed = JSON.parse(jsonText);
  assert.deepEqual(Object.keys(parsed).sort(), ["city", "sure"]);
  assert.ok(schema.properties.city.enum.includes(parsed.city), `city from the enum: ${parsed.city}`);
  assert.equal(typeof parsed.sure, "boolean");
  await screenshot(page, "web-json-schema");
  checkProblems();
  await context.close();
}

try {
  if (scenario === "main") await mainScenario();
  else if (scenario === "key") await keyScenario();
  else throw new Error(`unknown scenario ${scenario}`);
  console.log(`scenario ${scenario} passed`);
} catch (e) {
  // Leave what the page showed, to see why.
  if (activePage && !activePage.isClosed()) {
    const messages = await activePage.locator("#messages").innerText().catch(() => "");
    console.error(`the page's messages at the failure:\n${messages}`);
    await screenshot(activePage, `web-failure-${scenario}`).catch(() => {});
  }
  throw e;
} finally {
  await browser.close();
  clearTimeout(watchdog);
}
