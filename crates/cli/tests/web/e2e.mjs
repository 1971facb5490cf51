// Drives hearth's web page in headless Chromium. Run by crates/cli/tests/web_page.rs, which
// starts `hearth serve` and passes everything through the environment:
//   E2E_SCENARIO        "main" (chat, stream, stop, regenerate, edit, reload, XSS,
//                       conversations, export and import), "key" (the API key, structured
//                       output), "markdown" (markdown.js and highlight.js case by case) or
//                       "remote" (a model behind `hearth serve --upstream`)
//   E2E_BASE            the server, e.g. http://127.0.0.1:PORT
//   E2E_MODEL           the store model to pick (and the page's default)
//   E2E_BASE_MODEL      a base model in the store, listed first: labelled, never the default
//   E2E_API_KEY         the key the server wants ("key" scenario)
//   E2E_OUT             where screenshots go
//   E2E_CHROMIUM        the browser binary
//   E2E_PLAYWRIGHT_DIR  a directory whose node_modules holds playwright-core
//   E2E_REMOTE_MODEL    the upstream model's name, E2E_REMOTE_HOST its host:port ("remote" scenario)
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
  // The server's count never comes for a stopped answer; the page counts what streamed.
  assert.match(stats, /≈[1-9]\d* answer tokens/, "a stopped answer shows its token count");
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

  // A model answer (and a user message) carrying HTML must show as text. The answers are
  // served by an intercepted /api/chat so their content is certain.
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
    "",
    "| Name | Payload | Count |",
    "|:-----|:-------:|------:|",
    `| **cell** | ${XSS} | 42 |`,
    "| `code` | <script>alert(4)</script> | 7 |",
    "",
    "```js",
    "// Adds one.",
    "const add = (n) => n + 1; // <img src=y onerror=alert(5)>",
    `let s = "<script>alert(6)</script>";`,
    "```",
  ].join("\n");
  const chat = await fakeChat(page, [
    answer,
    "Second answer, written again.",
    "Answer to the follow-up.",
    "First answer, regenerated.",
    "Answer to the second follow-up.",
    "Answer to the edited question.",
  ]);
  await page.click("#new-chat");
  await sendMessage(page, `Please repeat ${XSS}`);
  await waitForAnswerDone(page);
  const userText = await page.locator("#messages .msg.user .msg-body").last().textContent();
  assert.equal(userText, `Please repeat ${XSS}`, "user text is shown literally");
  const shown = await answerText(page);
  assert.ok(shown.includes(`Here it is: ${XSS} and bold with ${XSS}`), `answer shown as text: ${shown}`);
  assert.ok(shown.includes("<script>alert(2)</script>"));
  assert.equal(await page.locator("#messages img").count(), 0, "no <img> in the messages");
  assert.equal(await page.locator("#messages script").count(), 0, "no <script> in the messages");
  assert.equal(await page.locator("#messages strong").count(), 2, "Markdown bold is rendered (text and table)");
  assert.equal(await page.locator("#messages figure.code button.copy").count(), 2, "code blocks with a copy button");
  assert.equal(await page.locator("#messages figure.code code").first().textContent(), `${XSS}\n<script>alert(2)</script>`);
  const hrefs = await page.locator("#messages a").evaluateAll((as) => as.map((a) => [a.href, a.rel]));
  assert.deepEqual(hrefs, [["https://example.com/docs", "noopener noreferrer nofollow"]], "only http(s) links");
  // The table: header, alignment, cells as text.
  const table = page.locator("#messages table");
  assert.equal(await table.count(), 1, "the pipe table is a table");
  assert.deepEqual(await table.locator("th").allTextContents(), ["Name", "Payload", "Count"]);
  assert.deepEqual(await table.locator("th").evaluateAll((ths) => ths.map((t) => getComputedStyle(t).textAlign)), ["left", "center", "right"]);
  assert.deepEqual(await table.locator("tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent))), [
    ["cell", XSS, "42"],
    ["code", "<script>alert(4)</script>", "7"],
  ]);
  // The JavaScript block is highlighted; its text is exactly the code.
  const js = page.locator('#messages figure.code code[data-lang="js"]');
  assert.equal(await js.textContent(), `// Adds one.\nconst add = (n) => n + 1; // <img src=y onerror=alert(5)>\nlet s = "<script>alert(6)</script>";`);
  const tokens = await js.locator("span").evaluateAll((ss) => ss.map((s) => `${s.className}:${s.textContent}`));
  for (const t of ["tok-com:// Adds one.", "tok-kw:const", "tok-num:1", "tok-kw:let", 'tok-str:"<script>alert(6)</script>"', "tok-com:// <img src=y onerror=alert(5)>"]) {
    assert.ok(tokens.includes(t), `highlighted ${t} in ${tokens.join(" | ")}`);
  }
  assert.notEqual(await js.locator(".tok-kw").first().evaluate((s) => getComputedStyle(s).color), await js.evaluate((c) => getComputedStyle(c).color), "keywords have their own colour");
  await page.waitForTimeout(300);
  checkProblems();
  log("XSS payload shown as text (also in a table and highlighted code); no image, no script, no dialog");
  await lastAnswer(page).locator("table").scrollIntoViewIfNeeded();
  await screenshot(page, "web-desktop");

  // Regenerate: the last answer is asked for again, without the old one in the history.
  assert.equal(await page.locator("#messages .msg.assistant button.regenerate").count(), 1, "Regenerate on the last answer");
  await lastAnswer(page).getByRole("button", { name: "Regenerate" }).click();
  await waitForAnswerDone(page);
  assert.deepEqual(chat.requests[1], [{ role: "user", content: `Please repeat ${XSS}` }], "regenerating sends the question alone");
  assert.equal(await answerText(page), "Second answer, written again.");
  assert.equal(await page.locator("#messages .msg").count(), 2, "the answer was replaced, not added");
  // A follow-up, then an edit of the first question: what came after it is replaced.
  await sendMessage(page, "A follow-up question.");
  await waitForAnswerDone(page);
  assert.equal(await page.locator("#messages .msg").count(), 4);
  // An earlier answer can be written again too, but what follows it would go: asked first.
  assert.equal(await page.locator("#messages .msg.assistant button.regenerate").count(), 2, "Regenerate on every answer");
  const firstAnswer = page.locator("#messages .msg.assistant").first();
  await firstAnswer.getByRole("button", { name: "Regenerate" }).click();
  assert.match(await firstAnswer.locator(".confirm").textContent(), /replaces this answer and the 2 messages after it/);
  await screenshot(page, "web-regenerate-earlier");
  await firstAnswer.getByRole("button", { name: "Cancel" }).click();
  assert.equal(await page.locator("#messages .msg").count(), 4, "a cancelled regenerate changes nothing");
  assert.equal(chat.requests.length, 3, "nothing was asked");
  await firstAnswer.getByRole("button", { name: "Regenerate" }).click();
  await firstAnswer.getByRole("button", { name: "Replace them" }).click();
  await waitForAnswerDone(page);
  assert.deepEqual(chat.requests[3], [{ role: "user", content: `Please repeat ${XSS}` }], "the earlier answer's question alone");
  assert.deepEqual(await page.locator("#messages .msg .msg-body").allTextContents(), [`Please repeat ${XSS}`, "First answer, regenerated."]);
  await sendMessage(page, "A second follow-up.");
  await waitForAnswerDone(page);
  assert.equal(await page.locator("#messages .msg").count(), 4);
  const firstUser = page.locator("#messages .msg.user").first();
  await firstUser.getByRole("button", { name: "Edit" }).click();
  const editor = firstUser.locator("form.edit textarea");
  assert.equal(await editor.inputValue(), `Please repeat ${XSS}`);
  assert.match(await firstUser.locator("form.edit").textContent(), /replaces the 3 messages after this one/);
  await screenshot(page, "web-edit");
  // Esc cancels and keeps everything.
  await editor.press("Escape");
  assert.equal(await page.locator("#messages .msg").count(), 4, "a cancelled edit changes nothing");
  await firstUser.getByRole("button", { name: "Edit" }).click();
  await editor.fill("An edited question.");
  await editor.press("Enter");
  await waitForAnswerDone(page);
  assert.deepEqual(chat.requests[5], [{ role: "user", content: "An edited question." }], "the edit is sent without what followed it");
  assert.deepEqual(await page.locator("#messages .msg .msg-body").allTextContents(), ["An edited question.", "Answer to the edited question."]);
  assert.equal(await page.locator("#conversations .conv.active .conv-title").textContent(), "An edited question.", "the title follows the first message");
  await page.reload();
  assert.deepEqual(await page.locator("#messages .msg .msg-body").allTextContents(), ["An edited question.", "Answer to the edited question."], "the edit is kept");
  await page.unroute("**/api/chat");
  checkProblems();
  log("regenerate and edit replace what follows, and are kept");

  // No key is in use: the settings offer no "Forget API key".
  await page.click("#open-settings");
  await page.locator("#settings").waitFor({ state: "visible" });
  assert.equal(await page.locator("#forget-key").isVisible(), false, "no Forget API key without a key");
  await page.click("#close-settings");

  // Export every conversation as JSON.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export-all")]);
  const exportedText = readFileSync(await download.path(), "utf8");
  const exported = JSON.parse(exportedText);
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

  // Delete the edited conversation (two steps, no native dialog).
  await page.locator("#conversations .conv.active").getByRole("button", { name: "Delete" }).click();
  await page.locator("#conversations .confirm").getByRole("button", { name: "Delete" }).click();
  assert.equal(await page.locator("#conversations .conv").count(), 1);
  await page.reload();
  assert.equal(await page.locator("#conversations .conv").count(), 1, "the deletion is kept");
  await page.setViewportSize({ width: 1280, height: 800 });

  // Import: a bad file is refused with a reason and changes nothing; the export brings the
  // deleted conversation back once.
  const stored = () => page.evaluate(() => localStorage.getItem("hearth.conversations"));
  const before = await stored();
  const broken = JSON.parse(exportedText);
  broken.conversations[0].messages[0].content = 5;
  for (const [name, body, why] of [
    ["notes.json", "this is not JSON", /not JSON/],
    ["other.json", JSON.stringify({ format: "something-else", conversations: [] }), /not a hearth conversations export/],
    ["newer.json", JSON.stringify({ format: "hearth-conversations", version: 9, conversations: [] }), /version 9/],
    ["broken.json", JSON.stringify(broken), /message 1 has no text/],
  ]) {
    await page.setInputFiles("#import-file", { name, mimeType: "application/json", buffer: Buffer.from(body) });
    await page.waitForFunction((n) => document.querySelector("#notice").textContent.includes(n), name);
    const notice = await page.locator("#notice").textContent();
    assert.match(notice, why, `the reason for ${name}`);
    assert.match(notice, /Your conversations are unchanged/);
    assert.equal(await page.locator("#conversations .conv").count(), 1, `${name} added nothing`);
    assert.equal(await stored(), before, `${name} left the stored conversations alone`);
  }
  await screenshot(page, "web-import-error");
  await page.setInputFiles("#import-file", { name: "export.json", mimeType: "application/json", buffer: Buffer.from(exportedText) });
  await page.waitForFunction(() => document.querySelector("#notice").textContent.startsWith("Imported"));
  assert.match(await page.locator("#notice").textContent(), /Imported 1 conversation from export\.json\. 1 conversation was already here\./);
  assert.equal(await page.locator("#conversations .conv").count(), 2);
  assert.equal(await page.locator("#conversations .conv.active .conv-title").textContent(), "An edited question.", "the imported conversation is shown");
  assert.deepEqual(await page.locator("#messages .msg .msg-body").allTextContents(), ["An edited question.", "Answer to the edited question."]);
  await page.reload();
  assert.equal(await page.locator("#conversations .conv").count(), 2, "the import is kept");
  // Importing the same file again adds nothing.
  await page.setInputFiles("#import-file", { name: "export.json", mimeType: "application/json", buffer: Buffer.from(exportedText) });
  await page.waitForFunction(() => document.querySelector("#notice").textContent.startsWith("Imported"));
  assert.match(await page.locator("#notice").textContent(), /Imported 0 conversations .* 2 conversations were already here/);
  assert.equal(await page.locator("#conversations .conv").count(), 2);
  log("import refuses bad files and adds only what is new");
  checkProblems();
  await context.close();
}

// Serves /api/chat from a list of answers (one per request, streamed in small pieces) and
// records each request's messages.
async function fakeChat(page, answers) {
  const chat = { requests: [] };
  await page.route("**/api/chat", async (route) => {
    const body = JSON.parse(route.request().postData());
    chat.requests.push(body.messages);
    const text = answers[chat.requests.length - 1] ?? "No more answers.";
    const pieces = text.match(/[\s\S]{1,7}/g);
    const lines = pieces.map((p) => JSON.stringify({ model, message: { role: "assistant", content: p }, done: false }));
    lines.push(JSON.stringify({
      model, message: { role: "assistant", content: "" }, done: true, done_reason: "stop",
      total_duration: 120000000, load_duration: 1000000, prompt_eval_count: 12, prompt_eval_duration: 20000000,
      eval_count: pieces.length, eval_duration: 100000000,
    }));
    await route.fulfill({ status: 200, contentType: "application/x-ndjson", body: lines.join("\n") + "\n" });
  });
  return chat;
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

  // With a key in use the settings offer to forget it; forgotten, the page asks again.
  await page.click("#open-settings");
  await page.locator("#settings").waitFor({ state: "visible" });
  assert.ok(await page.locator("#forget-key").isVisible(), "Forget API key while a key is in use");
  await page.click("#forget-key");
  assert.equal(await page.locator("#forget-key").isVisible(), false, "no Forget API key once forgotten");
  assert.match(await page.locator("#notice").textContent(), /API key was forgotten/);
  await page.click("#close-settings");
  await page.locator("#settings").waitFor({ state: "hidden" });
  assert.equal(await page.evaluate(() => localStorage.getItem("hearth.apiKey")), null);
  await page.reload();
  await page.locator("#key-dialog").waitFor({ state: "visible" });
  await page.fill("#key-input", key);
  await page.click("#key-save");
  await page.locator("#key-dialog").waitFor({ state: "hidden" });
  await pickModel(page);
  checkProblems();
  await context.close();
}

// A remote model (`hearth serve --upstream`, a stub OpenAI server started by the test):
// listed beside the store's models and marked remote, never the default; an answer streams
// from it with the page's settings and its usage; Stop ends the stream (the test checks the
// stub saw the connection close); an upstream that breaks off mid-answer shows an error.
async function remoteScenario() {
  const remoteName = env("E2E_REMOTE_MODEL");
  const remoteHost = env("E2E_REMOTE_HOST");
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await openPage(context);
  await page.goto(base);
  await page.waitForFunction(
    (name) => [...document.querySelectorAll("#model option")].some((o) => o.value === name),
    remoteName,
    { timeout: 30000 },
  );
  const options = await page.locator("#model option").evaluateAll((os) =>
    os.map((o) => ({ value: o.value, label: o.textContent, title: o.title })),
  );
  log("models:", options.map((o) => `${o.label} [${o.title}]`).join(" | "));
  const remote = options.find((o) => o.value === remoteName);
  assert.equal(remote.label, `${remoteName} · remote: ${remoteHost}`, "the remote model says where it runs");
  assert.match(remote.title, /your messages are sent to it/);
  const local = options.find((o) => o.value === model || o.value.startsWith(`${model}:`));
  assert.doesNotMatch(local.label, /remote/);
  const selected = await page.locator("#model").inputValue();
  assert.ok(selected === local.value, `the page picks the local ${model} by default, not ${selected}`);

  await page.selectOption("#model", remoteName);
  await setSettings(page, { "#set-max-tokens": 40 });
  await sendMessage(page, "Say hello.");
  const stats = await waitForAnswerDone(page);
  log("remote answer:", JSON.stringify(await answerText(page)), stats);
  assert.equal(await answerText(page), "Hello from the remote box.");
  assert.match(stats, /17 prompt tokens/);
  assert.match(stats, /5 answer tokens/);
  await screenshot(page, "web-remote-answer");

  // Stop while the remote model streams.
  await sendMessage(page, "Count slowly.");
  await page.waitForFunction(() => {
    const body = [...document.querySelectorAll("#messages .msg.assistant .msg-body")].pop();
    return body && /\b3 /.test(body.textContent);
  });
  await page.click("#stop");
  const stopped = await waitForAnswerDone(page);
  const partial = await answerText(page);
  log("stopped remote answer:", JSON.stringify(partial), stopped);
  assert.match(stopped, /stopped/);
  assert.ok(!partial.includes("60 "), "stopped before the end");

  // The upstream closes the connection mid-answer: the page keeps what came and says so.
  await sendMessage(page, "Break off, please.");
  const broken = await waitForAnswerDone(page);
  log("broken remote answer:", JSON.stringify(await answerText(page)), broken);
  assert.equal(await answerText(page), "Half an ans");
  assert.match(broken, /error: /);
  assert.match(await page.locator("#notice").textContent(), /The answer failed: /);
  await screenshot(page, "web-remote-broken");

  // The conversation remembers its remote model across a reload.
  await page.reload();
  await page.waitForFunction((name) => document.querySelector("#model").value === name, remoteName);
  assert.equal(await page.locator("#messages .msg.assistant").count(), 3);
  checkProblems();
  await context.close();
}

// markdown.js and highlight.js case by case, in the page (as the unit tests of both).
async function markdownScenario() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await openPage(context);
  await page.goto(base);
  const render = (cases) =>
    page.evaluate(async (cases) => {
      const { renderMarkdown } = await import("/markdown.js");
      const { highlight } = await import("/highlight.js");
      return cases.map(([kind, text, lang]) => {
        const box = document.createElement("div");
        box.appendChild(kind === "md" ? renderMarkdown(text) : highlight(text, lang));
        return {
          text: box.textContent,
          tags: [...box.querySelectorAll("*")].map((n) => n.tagName.toLowerCase()),
          spans: [...box.querySelectorAll("span[class^=tok-]")].map((s) => `${s.className}:${s.textContent}`),
          cells: [...box.querySelectorAll("tr")].map((tr) => [...tr.cells].map((c) => `${c.tagName.toLowerCase()}${c.className ? `.${c.className}` : ""}:${c.textContent}`)),
          attrs: [...box.querySelectorAll("*")].flatMap((n) => [...n.attributes].map((a) => a.name)),
        };
      });
    }, cases);
  const check = async (name, kind, text, lang, expect) => {
    const [got] = await render([[kind, text, lang]]);
    try {
      expect(got);
    } catch (e) {
      e.message = `${name}: ${e.message}\n${JSON.stringify(got)}`;
      throw e;
    }
    // Nothing an attacker writes becomes an element or an attribute that runs.
    for (const t of got.tags) assert.ok(!["script", "img", "iframe", "svg", "object", "style"].includes(t), `${name}: made a <${t}>`);
    for (const a of got.attrs) assert.ok(!a.startsWith("on") && a !== "style" && a !== "src", `${name}: set ${a}`);
    log("ok:", name);
  };

  // Tables.
  await check("a pipe table with alignment", "md", "| a | b | c |\n|:--|:-:|--:|\n| 1 | **two** | `3` |\n| x |", null, (g) => {
    assert.deepEqual(g.cells, [
      ["th.align-left:a", "th.align-center:b", "th.align-right:c"],
      ["td.align-left:1", "td.align-center:two", "td.align-right:3"],
      ["td.align-left:x", "td.align-center:", "td.align-right:"],
    ]);
    assert.ok(g.tags.includes("strong") && g.tags.includes("code"), "inline Markdown in cells");
  });
  await check("a table without outer pipes, after a paragraph", "md", "Results:\nname | n\n--- | ---\nfoo | 1\n\nafter", null, (g) => {
    assert.deepEqual(g.cells, [["th:name", "th:n"], ["td:foo", "td:1"]]);
    assert.deepEqual(g.tags.filter((t) => t === "p").length, 2);
  });
  await check("an escaped pipe stays in its cell", "md", "| a | b |\n|---|---|\n| x \\| y | `p\\|q` |", null, (g) => {
    assert.deepEqual(g.cells[1], ["td:x | y", "td:p|q"]);
  });
  await check("HTML in table cells stays text", "md", "| <script>alert(1)</script> | h |\n| --- | --- |\n| <img src=x onerror=alert(1)> | [x](javascript:alert(1)) |", null, (g) => {
    assert.deepEqual(g.cells, [["th:<script>alert(1)</script>", "th:h"], ["td:<img src=x onerror=alert(1)>", "td:[x](javascript:alert(1))"]]);
  });
  await check("no delimiter row, no table", "md", "a | b\nc | d", null, (g) => {
    assert.deepEqual(g.cells, []);
    assert.equal(g.text, "a | bc | d");
  });
  await check("a delimiter row of another width, no table", "md", "a | b\n--- | --- | ---", null, (g) => assert.deepEqual(g.cells, []));

  // Code highlighting: the text is always the code, tokens in spans.
  const js = `import { x } from "./x.js";\n/* block\n comment */\nconst n = 0x1f + 2.5e3; // done\nfunction f(a) { return \`t \${a}\` ?? null; }`;
  await check("JavaScript", "code", js, "js", (g) => {
    assert.equal(g.text, js);
    for (const t of ["tok-kw:import", 'tok-str:"./x.js"', "tok-com:/* block\n comment */", "tok-kw:const", "tok-num:0x1f", "tok-num:2.5e3", "tok-com:// done", "tok-kw:function", "tok-fn:f", "tok-kw:return", "tok-str:`t ${a}`", "tok-lit:null"]) {
      assert.ok(g.spans.includes(t), t);
    }
  });
  const py = `def greet(name):\n    """Says hi."""\n    if name is None: return f"hi {name}"  # note\n    return 'x\\'y' + str(42)`;
  await check("Python", "code", py, "python", (g) => {
    assert.equal(g.text, py);
    for (const t of ["tok-kw:def", "tok-fn:greet", 'tok-str:"""Says hi."""', "tok-kw:if", "tok-kw:is", "tok-lit:None", 'tok-str:f"hi {name}"', "tok-com:# note", "tok-str:'x\\'y'", "tok-num:42"]) {
      assert.ok(g.spans.includes(t), t);
    }
  });
  const rs = `fn first<'a>(s: &'a str) -> char {\n    let c = 'x'; // a char\n    s.chars().next().unwrap_or(c) as char\n}`;
  await check("Rust", "code", rs, "rust", (g) => {
    assert.equal(g.text, rs);
    for (const t of ["tok-kw:fn", "tok-kw:'a", "tok-str:'x'", "tok-kw:let", "tok-com:// a char", "tok-kw:as"]) assert.ok(g.spans.includes(t), t);
  });
  await check("C", "code", '#include <stdio.h>\nint main(void) { printf("%d\\n", 10); }', "c", (g) => {
    for (const t of ["tok-kw:#include", "tok-kw:int", "tok-fn:main", 'tok-str:"%d\\n"', "tok-num:10"]) assert.ok(g.spans.includes(t), t);
  });
  await check("shell", "code", 'echo "$HOME" # where\nexport N=3', "bash", (g) => {
    for (const t of ["tok-kw:echo", 'tok-str:"$HOME"', "tok-com:# where", "tok-kw:export"]) assert.ok(g.spans.includes(t), t);
  });
  await check("an apostrophe in a word opens no string", "code", "echo don't # stop\nx='y'", "sh", (g) => {
    assert.deepEqual(g.spans, ["tok-kw:echo", "tok-com:# stop", "tok-str:'y'"]);
  });
  await check("Python's prefixed strings", "code", "p = r'\\d' + b\"x\"", "py", (g) => {
    assert.deepEqual(g.spans, ["tok-str:r'\\d'", 'tok-str:b"x"']);
  });
  await check("SQL in capitals", "code", "SELECT name FROM t WHERE id = 1; -- one", "sql", (g) => {
    for (const t of ["tok-kw:SELECT", "tok-kw:FROM", "tok-kw:WHERE", "tok-num:1", "tok-com:-- one"]) assert.ok(g.spans.includes(t), t);
  });
  await check("JSON", "code", '{"a": [1, true, null, "s"]}', "json", (g) => {
    assert.deepEqual(g.spans, ['tok-str:"a"', "tok-num:1", "tok-lit:true", "tok-lit:null", 'tok-str:"s"']);
  });
  const html = '<!-- c --><img src="x" onerror="alert(1)"><script>alert(2)</script>';
  await check("HTML stays text", "code", html, "html", (g) => {
    assert.equal(g.text, html);
    for (const t of ["tok-com:<!-- c -->", "tok-kw:img", 'tok-str:"x"', 'tok-str:"alert(1)"', "tok-kw:script", "tok-kw:/script"]) assert.ok(g.spans.includes(t), t);
  });
  await check("an unknown language is plain", "code", "if x then y", "brainfudge", (g) => {
    assert.deepEqual(g.spans, []);
    assert.equal(g.text, "if x then y");
  });
  await check("an unterminated string and comment", "code", 'let s = "open\n/* never closed', "js", (g) => {
    assert.deepEqual(g.spans, ["tok-kw:let", 'tok-str:"open', "tok-com:/* never closed"]);
  });
  const xss = "```js\nconst a = \"<img src=x onerror=alert(1)>\"; // <script>alert(2)</script>\n```";
  await check("HTML in a highlighted block stays text", "md", xss, null, (g) => {
    assert.equal(g.text.endsWith('const a = "<img src=x onerror=alert(1)>"; // <script>alert(2)</script>'), true);
    assert.ok(g.spans.includes('tok-str:"<img src=x onerror=alert(1)>"'));
    assert.ok(g.spans.includes("tok-com:// <script>alert(2)</script>"));
  });
  // Long input stays quick (the page re-renders an answer on every frame while it streams).
  const timing = await page.evaluate(async () => {
    const { renderMarkdown } = await import("/markdown.js");
    const code = "```python\n" + "def f(x):\n    return x * 2  # twice\n".repeat(2000) + "```\n";
    const rows = "| a | b |\n|---|---|\n" + "| 1 | two |\n".repeat(2000);
    const t0 = performance.now();
    renderMarkdown(code + rows);
    return performance.now() - t0;
  });
  log(`rendered 4000 lines of code and 2000 table rows in ${timing.toFixed(0)} ms`);
  assert.ok(timing < 2000, `rendering is quick (${timing} ms)`);
  await page.waitForTimeout(300);
  checkProblems();
  await context.close();
}

try {
  if (scenario === "main") await mainScenario();
  else if (scenario === "key") await keyScenario();
  else if (scenario === "markdown") await markdownScenario();
  else if (scenario === "remote") await remoteScenario();
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
