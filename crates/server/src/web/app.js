// hearth's chat page: plain JavaScript, no build step, nothing loaded from elsewhere.
// It talks to this server's Ollama-compatible API (/api/tags, /api/chat; remote models through
// /v1/chat/completions) and keeps conversations and settings in the browser's localStorage.
// Model and user text are only ever turned into text nodes (see markdown.js), never into HTML.

import { renderMarkdown, copyText } from "./markdown.js";

const KEYS = {
  conversations: "hearth.conversations",
  current: "hearth.current",
  settings: "hearth.settings",
  model: "hearth.model",
  apiKey: "hearth.apiKey",
};

const $ = (id) => document.getElementById(id);
const ui = {
  sidebar: $("sidebar"),
  backdrop: $("backdrop"),
  toggleSidebar: $("toggle-sidebar"),
  list: $("conversations"),
  noConversations: $("no-conversations"),
  newChat: $("new-chat"),
  exportAll: $("export-all"),
  importAll: $("import-all"),
  importFile: $("import-file"),
  model: $("model"),
  openSettings: $("open-settings"),
  notice: $("notice"),
  messages: $("messages"),
  empty: $("empty"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  settings: $("settings"),
  settingsForm: $("settings-form"),
  settingsError: $("settings-error"),
  system: $("set-system"),
  temperature: $("set-temperature"),
  topP: $("set-top-p"),
  maxTokens: $("set-max-tokens"),
  seed: $("set-seed"),
  format: $("set-format"),
  schema: $("set-schema"),
  schemaField: $("schema-field"),
  resetSettings: $("reset-settings"),
  forgetKey: $("forget-key"),
  keyDialog: $("key-dialog"),
  keyForm: $("key-form"),
  keyWhy: $("key-why"),
  keyInput: $("key-input"),
  keyCancel: $("key-cancel"),
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, className, title) {
  const b = el("button", className, text);
  b.type = "button";
  if (title) b.title = title;
  return b;
}

// ---- storage ---------------------------------------------------------------------------

function load(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch (e) {
    return fallback;
  }
}

// Returns whether the value was saved.
function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch (e) {
    notify(`Could not save to this browser's storage (${e.name}). Delete or export old conversations to make room.`, true);
    return false;
  }
}

let conversations = load(KEYS.conversations, []);
if (!Array.isArray(conversations)) conversations = [];
let currentId = load(KEYS.current, null);
let settings = load(KEYS.settings, {});
let apiKey = (() => {
  try {
    return localStorage.getItem(KEYS.apiKey);
  } catch (e) {
    return null;
  }
})();

function persist() {
  conversations.sort((a, b) => b.updated - a.updated);
  const saved = save(KEYS.conversations, conversations);
  save(KEYS.current, currentId);
  return saved;
}

function current() {
  return conversations.find((c) => c.id === currentId) || null;
}

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// ---- notices ---------------------------------------------------------------------------

let noticeTimer = null;
function notify(text, sticky) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(() => (ui.notice.hidden = true), 5000);
}

function clearNotice() {
  ui.notice.hidden = true;
}

// ---- API (with the key asked for once) -------------------------------------------------

let keyPrompt = null;

function askForKey(refused) {
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    ui.keyWhy.textContent = refused
      ? "The server refused that key. Enter the key given to hearth serve --api-key."
      : "This server needs an API key (the one given to hearth serve --api-key). It is kept in this browser.";
    ui.keyInput.value = "";
    const done = (value) => {
      ui.keyForm.removeEventListener("submit", onSubmit);
      ui.keyCancel.removeEventListener("click", onCancel);
      ui.keyDialog.removeEventListener("cancel", onCancel);
      if (ui.keyDialog.open) ui.keyDialog.close();
      keyPrompt = null;
      resolve(value);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const key = ui.keyInput.value.trim();
      if (key) done(key);
    };
    const onCancel = (e) => {
      e.preventDefault();
      done(null);
    };
    ui.keyForm.addEventListener("submit", onSubmit);
    ui.keyCancel.addEventListener("click", onCancel);
    ui.keyDialog.addEventListener("cancel", onCancel);
    ui.keyDialog.showModal();
    ui.keyInput.focus();
  });
  return keyPrompt;
}

async function api(path, init = {}) {
  let refused = false;
  for (;;) {
    const headers = new Headers(init.headers || {});
    if (apiKey) headers.set("Authorization", `Bearer ${apiKey}`);
    const resp = await fetch(path, { ...init, headers });
    if (resp.status !== 401) return resp;
    const key = await askForKey(refused || Boolean(apiKey));
    if (!key) throw new Error("This server needs an API key; none was given.");
    apiKey = key;
    try {
      localStorage.setItem(KEYS.apiKey, key);
    } catch (e) {
      // Kept for this page only.
    }
    updateKeyButton();
    refused = true;
  }
}

async function errorText(resp) {
  const body = await resp.text();
  try {
    const v = JSON.parse(body);
    if (typeof v.error === "string") return v.error;
    if (v.error && typeof v.error.message === "string") return v.error.message;
  } catch (e) {
    // Not JSON: use the text.
  }
  return body.trim() || `${resp.status} ${resp.statusText}`;
}

// ---- models ----------------------------------------------------------------------------

function formatSize(bytes) {
  if (!Number.isFinite(bytes) || bytes <= 0) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let n = bytes;
  let u = 0;
  while (n >= 1000 && u < units.length - 1) {
    n /= 1000;
    u += 1;
  }
  return `${n >= 100 || u === 0 ? Math.round(n) : n.toFixed(1)} ${units[u]}`;
}

// The model chosen when neither the conversation nor an earlier choice names one.
const DEFAULT_MODEL = "smollm2";
const BASE_TITLE = "Base model: pretrained to continue text, not to chat (the server refuses to chat with it). Pick an instruct model to chat.";

function modelLabel(name, size, details) {
  const d = details || {};
  const bits = [formatSize(size), d.parameter_size, d.quantization_level].filter(Boolean);
  // A base (pretrained) model continues text and does not chat: say so where it is picked.
  if (d.kind === "base") bits.push("base");
  // A model on another machine (`hearth serve --upstream`): prompts leave this machine.
  if (d.remote) bits.push(`remote: ${d.remote}`);
  return bits.length ? `${name} · ${bits.join(" · ")}` : name;
}

const isBase = (m) => Boolean(m && m.details && m.details.kind === "base");
const isRemote = (m) => Boolean(m && m.details && m.details.remote);
// Names of the models served by upstream servers, from the last model list.
let remoteModels = new Set();
const REMOTE_TITLE = "Remote model: served by another machine through this server; your messages are sent to it.";

// The default model if it is there, else the first model that chats; a base model only when
// there is nothing else.
function defaultModel(models) {
  const chat = models.filter((m) => !isBase(m));
  const preferred = chat.find((m) => m.name === DEFAULT_MODEL || m.name.startsWith(`${DEFAULT_MODEL}:`));
  return (preferred || chat[0] || models[0]).name;
}

// The model list may leave out the parameter count and quantization; /api/show reads them
// from the file. A failure only leaves the label shorter.
async function addDetails(models) {
  // Remote models have no file here to read.
  const missing = models.filter((m) => !isRemote(m) && !(m.details && m.details.quantization_level)).slice(0, 32);
  await Promise.all(
    missing.map(async (m) => {
      try {
        const resp = await api("/api/show", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ model: m.name }),
        });
        if (!resp.ok) return;
        const details = (await resp.json()).details;
        const opt = [...ui.model.options].find((o) => o.value === m.name);
        if (opt && details) {
          opt.textContent = modelLabel(m.name, m.size, details);
          if (details.kind === "base") opt.title = BASE_TITLE;
        }
      } catch (e) {
        // Keep the shorter label.
      }
    }),
  );
}

async function loadModels() {
  ui.model.replaceChildren(el("option", null, "Loading models…"));
  ui.model.disabled = true;
  let models;
  try {
    const resp = await api("/api/tags");
    if (!resp.ok) throw new Error(await errorText(resp));
    models = (await resp.json()).models || [];
  } catch (e) {
    ui.model.replaceChildren(el("option", null, "Models unavailable"));
    notify(`Could not list the models: ${e.message}`, true);
    return;
  }
  ui.model.replaceChildren();
  if (models.length === 0) {
    ui.model.appendChild(el("option", null, "No models"));
    notify("No models in the store. Add one with `hearth pull NAME` or `hearth create NAME --from FILE.gguf`, then reload.", true);
    return;
  }
  for (const m of models) {
    const opt = el("option", null, modelLabel(m.name, m.size, m.details));
    opt.value = m.name;
    if (isBase(m)) opt.title = BASE_TITLE;
    if (isRemote(m)) opt.title = REMOTE_TITLE;
    ui.model.appendChild(opt);
  }
  remoteModels = new Set(models.filter(isRemote).map((m) => m.name));
  addDetails(models);
  // The conversation's own model; else the last one chosen, unless it is a base model (an
  // earlier page picked the first model in the list and remembered it on sending); else the
  // default.
  const conv = current();
  const find = (name) => models.find((m) => m.name === name);
  const saved = find(load(KEYS.model, null));
  let choice = defaultModel(models);
  if (conv && conv.model && find(conv.model)) choice = conv.model;
  else if (saved && !isBase(saved)) choice = saved.name;
  ui.model.value = choice;
  ui.model.disabled = false;
  updateComposer();
}

// ---- settings --------------------------------------------------------------------------

const FIELDS = [
  ["temperature", "temperature", 0, 2, false, "Temperature"],
  ["topP", "top_p", 0, 1, false, "Top-p"],
  ["maxTokens", "num_predict", 1, 1048576, true, "Max tokens"],
  ["seed", "seed", 0, Number.MAX_SAFE_INTEGER, true, "Seed"],
];

function showSettings() {
  showSettingsValues();
  ui.settings.showModal();
  ui.system.focus();
}

// Reads the form; returns an error message or null.
function readSettings() {
  const next = { system: ui.system.value };
  for (const [field, key, min, max, integer, label] of FIELDS) {
    const raw = ui[field].value.trim();
    if (raw === "") continue;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      return `${label} must be ${integer ? "a whole number" : "a number"} from ${min} to ${max}.`;
    }
    next[key] = n;
  }
  const format = ui.format.value;
  if (format === "json") next.format = "json";
  if (format === "schema") {
    let schema;
    try {
      schema = JSON.parse(ui.schema.value);
    } catch (e) {
      return `The JSON schema is not valid JSON: ${e.message}`;
    }
    if (schema === null || typeof schema !== "object" || Array.isArray(schema)) {
      return "The JSON schema must be a JSON object, such as {\"type\": \"object\"}.";
    }
    next.format = "schema";
    next.schema = ui.schema.value;
  }
  settings = next;
  save(KEYS.settings, settings);
  return null;
}

// "Forget API key" only means something while the page holds a key.
function updateKeyButton() {
  ui.forgetKey.hidden = !apiKey;
}

function showSettingsValues() {
  updateKeyButton();
  ui.system.value = settings.system || "";
  for (const [field, key] of FIELDS) ui[field].value = settings[key] ?? "";
  ui.format.value = settings.format || "";
  ui.schema.value = settings.schema || "";
  ui.schemaField.hidden = ui.format.value !== "schema";
  ui.settingsError.hidden = true;
}

// Ollama's `format`: "json", a schema, or nothing for plain text.
function answerFormat() {
  if (settings.format === "json") return "json";
  if (settings.format === "schema" && settings.schema) return JSON.parse(settings.schema);
  return undefined;
}

function options() {
  const o = {};
  for (const [, key] of FIELDS) if (settings[key] !== undefined) o[key] = settings[key];
  return o;
}

// ---- conversation list -----------------------------------------------------------------

function renderList() {
  ui.list.replaceChildren();
  ui.noConversations.hidden = conversations.length > 0;
  for (const conv of conversations) {
    const li = el("li", conv.id === currentId ? "conv active" : "conv");
    li.dataset.id = conv.id;
    const open = button(conv.title || "New chat", "conv-title", conv.title);
    if (conv.id === currentId) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => selectConversation(conv.id));
    const actions = el("div", "conv-actions");
    const rename = button("Rename", "small", "Rename this conversation");
    rename.addEventListener("click", () => startRename(li, conv));
    const exp = button("Export", "small", "Download this conversation as JSON");
    exp.addEventListener("click", () => exportJson([conv], `hearth-${slug(conv.title)}.json`));
    const del = button("Delete", "small danger-text", "Delete this conversation");
    del.addEventListener("click", () => confirmDelete(li, conv));
    actions.append(rename, exp, del);
    li.append(open, actions);
    ui.list.appendChild(li);
  }
}

function startRename(li, conv) {
  const input = el("input", "rename");
  input.type = "text";
  input.value = conv.title || "";
  input.maxLength = 200;
  input.setAttribute("aria-label", "New name");
  // Once: Chromium blurs the input when renderList removes it, which would call this again
  // in the middle of that removal (and throw).
  let finished = false;
  const finish = (keep) => {
    if (finished) return;
    finished = true;
    if (keep && input.value.trim()) {
      conv.title = input.value.trim();
      persist();
    }
    renderList();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      finish(true);
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

function confirmDelete(li, conv) {
  const box = el("div", "confirm");
  box.appendChild(el("span", null, "Delete this conversation?"));
  const yes = button("Delete", "small danger");
  const no = button("Keep", "small");
  yes.addEventListener("click", () => deleteConversation(conv.id));
  no.addEventListener("click", renderList);
  box.append(yes, no);
  li.replaceChildren(box);
  no.focus();
}

function deleteConversation(id) {
  if (generation && generation.convId === id) generation.controller.abort();
  conversations = conversations.filter((c) => c.id !== id);
  if (currentId === id) currentId = null;
  persist();
  renderList();
  renderConversation();
}

function selectConversation(id) {
  if (generation && generation.convId !== id) generation.controller.abort();
  currentId = id;
  save(KEYS.current, currentId);
  const conv = current();
  if (conv && conv.model && [...ui.model.options].some((o) => o.value === conv.model)) {
    ui.model.value = conv.model;
  }
  renderList();
  renderConversation();
  closeSidebar();
  ui.prompt.focus();
}

function newChat() {
  if (generation) generation.controller.abort();
  currentId = null;
  save(KEYS.current, currentId);
  renderList();
  renderConversation();
  closeSidebar();
  ui.prompt.focus();
}

function slug(title) {
  return (title || "conversation").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "conversation";
}

function exportJson(list, filename) {
  const data = {
    format: "hearth-conversations",
    version: 1,
    exported_at: new Date().toISOString(),
    conversations: list,
  };
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const a = el("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---- import ------------------------------------------------------------------------------

const IMPORT_MAX_BYTES = 50 * 1024 * 1024;
const STAT_NUMBERS = ["ttft_ms", "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration", "streamed_count"];

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const str = (v, max) => (typeof v === "string" ? v.slice(0, max) : undefined);
const time = (v, fallback) => (Number.isFinite(v) && v >= 0 ? v : fallback);

// Only the statistics the page shows, with their types.
function cleanStats(stats) {
  if (!isObject(stats)) return undefined;
  const out = {};
  for (const k of STAT_NUMBERS) if (Number.isFinite(stats[k]) && stats[k] >= 0) out[k] = stats[k];
  if (stats.stopped === true) out.stopped = true;
  for (const k of ["done_reason", "error"]) if (typeof stats[k] === "string") out[k] = stats[k].slice(0, 1000);
  return out;
}

// A message with the fields the page uses, in one order; throws when it is not one.
function cleanMessage(m, where) {
  if (!isObject(m) || (m.role !== "user" && m.role !== "assistant")) {
    throw new Error(`${where} is not a user or assistant message.`);
  }
  if (typeof m.content !== "string") throw new Error(`${where} has no text.`);
  const msg = { role: m.role, content: m.content };
  if (typeof m.model === "string") msg.model = m.model.slice(0, 200);
  if (Number.isFinite(m.at)) msg.at = m.at;
  const stats = m.role === "assistant" ? cleanStats(m.stats) : undefined;
  if (stats) msg.stats = stats;
  return msg;
}

// Whether a stored conversation holds these (clean) messages.
function sameMessages(conv, messages) {
  try {
    const mine = JSON.stringify(conv.messages.map((m) => cleanMessage(m, "")));
    return mine === JSON.stringify(messages);
  } catch (e) {
    return false;
  }
}

// Reads an export made by exportJson. Throws an Error saying what is wrong; returns clean
// conversations (known fields only, checked types) otherwise. All or nothing.
function parseExport(raw) {
  let data;
  try {
    data = JSON.parse(raw);
  } catch (e) {
    throw new Error(`The file is not JSON (${e.message}).`);
  }
  if (!isObject(data) || data.format !== "hearth-conversations") {
    throw new Error("The file is not a hearth conversations export (made with Export all or a conversation's Export).");
  }
  if (data.version !== 1) {
    throw new Error(`The export is version ${JSON.stringify(data.version)}; this page reads version 1.`);
  }
  if (!Array.isArray(data.conversations)) throw new Error("The export has no list of conversations.");
  if (data.conversations.length === 0) throw new Error("The export holds no conversations.");
  return data.conversations.map((c, n) => {
    const where = `Conversation ${n + 1}${isObject(c) && typeof c.title === "string" ? ` (“${c.title.slice(0, 60)}”)` : ""}`;
    if (!isObject(c)) throw new Error(`${where} is not an object.`);
    if (!Array.isArray(c.messages)) throw new Error(`${where} has no list of messages.`);
    const messages = c.messages.map((m, k) => cleanMessage(m, `${where}: message ${k + 1}`));
    const first = messages.find((m) => m.role === "user");
    const now = Date.now();
    const conv = {
      id: typeof c.id === "string" && /^[\w-]{1,100}$/.test(c.id) ? c.id : newId(),
      title: (str(c.title, 200) || "").trim() || (first ? first.content.split("\n")[0].slice(0, 60) : "") || "Imported chat",
      created: time(c.created, now),
      updated: time(c.updated, now),
      messages,
    };
    if (typeof c.model === "string") conv.model = c.model.slice(0, 200);
    return conv;
  });
}

// Adds the file's conversations to the stored ones. A conversation already here (same id,
// same messages) is left alone; one whose id is taken by another gets a new id. Nothing
// changes when the file is bad or the storage is full.
async function importFile(file) {
  let list;
  try {
    if (file.size > IMPORT_MAX_BYTES) throw new Error(`The file is larger than ${formatSize(IMPORT_MAX_BYTES)}.`);
    list = parseExport(await file.text());
  } catch (e) {
    notify(`Could not import ${file.name}: ${e.message} Your conversations are unchanged.`, true);
    return;
  }
  const before = conversations.slice();
  const added = [];
  let present = 0;
  for (const conv of list) {
    const same = conversations.find((c) => c.id === conv.id);
    if (same && sameMessages(same, conv.messages)) {
      present += 1;
      continue;
    }
    if (same || added.some((c) => c.id === conv.id)) conv.id = newId();
    added.push(conv);
  }
  conversations = conversations.concat(added);
  if (!persist()) {
    conversations = before;
    persist();
    notify(`Could not import ${file.name}: this browser's storage is full. Your conversations are unchanged.`, true);
    return;
  }
  const count = (n) => `${n} conversation${n === 1 ? "" : "s"}`;
  let message = `Imported ${count(added.length)} from ${file.name}.`;
  if (present) message += ` ${count(present)} ${present === 1 ? "was" : "were"} already here.`;
  notify(message);
  if (added.length > 0 && !generation) selectConversation(added[0].id);
  else renderList();
}

// ---- messages --------------------------------------------------------------------------

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

function statsText(stats) {
  if (!stats) return "";
  const parts = [];
  if (stats.ttft_ms !== undefined) parts.push(`first token ${formatMs(stats.ttft_ms)}`);
  if (stats.eval_count !== undefined && stats.eval_duration) {
    parts.push(`${(stats.eval_count / (stats.eval_duration / 1e9)).toFixed(1)} tokens/s`);
  }
  if (stats.prompt_eval_count !== undefined) parts.push(`${stats.prompt_eval_count} prompt tokens`);
  if (stats.eval_count !== undefined) parts.push(`${stats.eval_count} answer tokens`);
  // Stopped (or broken off) before the server's count came: the pieces that streamed, one
  // per token (a token that completes no character yet shares the next one's piece).
  else if (stats.streamed_count) parts.push(`≈${stats.streamed_count} answer tokens`);
  if (stats.total_duration) parts.push(`total ${formatMs(stats.total_duration / 1e6)}`);
  if (stats.done_reason === "length") parts.push("stopped at max tokens");
  if (stats.stopped) parts.push("stopped");
  if (stats.error) parts.push(`error: ${stats.error}`);
  return parts.join(" · ");
}

// A message with its actions: Edit on the user's messages and Regenerate on the answers
// (neither while an answer is being written), Copy on all.
function messageNode(msg, conv, index) {
  const wrap = el("article", `msg ${msg.role}`);
  const head = el("div", "msg-head");
  head.appendChild(el("span", "who", msg.role === "user" ? "You" : msg.model || "Assistant"));
  const actions = el("div", "msg-actions");
  head.appendChild(actions);
  if (!generation && conv && msg.role === "user") {
    const edit = button("Edit", "small edit-msg", "Edit this message and send it again");
    edit.addEventListener("click", () => startEdit(wrap, conv, index));
    actions.appendChild(edit);
  }
  if (!generation && conv && msg.role === "assistant" && index > 0 && conv.messages[index - 1].role === "user") {
    const later = conv.messages.length - index - 1;
    const again = button("Regenerate", "small regenerate", later ? "Write this answer again (what follows it is replaced)" : "Write this answer again");
    again.addEventListener("click", () => (later ? confirmRegenerate(wrap, conv, index) : regenerate(conv, index)));
    actions.appendChild(again);
  }
  const copy = button("Copy", "small copy-msg", "Copy this message as text");
  copy.addEventListener("click", async () => {
    try {
      await copyText(msg.content);
      copy.textContent = "Copied";
    } catch (e) {
      copy.textContent = "Copy failed";
    }
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  });
  actions.appendChild(copy);
  const body = el("div", "msg-body");
  const stats = el("div", "stats");
  wrap.append(head, body, stats);
  fillMessage(wrap, msg);
  return wrap;
}

function fillMessage(node, msg, streaming) {
  const body = node.querySelector(".msg-body");
  if (msg.role === "user") {
    body.textContent = msg.content;
  } else {
    body.replaceChildren(renderMarkdown(msg.content));
    if (streaming) body.appendChild(el("span", "cursor", "▍"));
  }
  node.classList.toggle("streaming", Boolean(streaming));
  // Screen readers wait for the whole answer instead of rereading every token.
  node.setAttribute("aria-busy", streaming ? "true" : "false");
  node.querySelector(".stats").textContent = streaming && !msg.content ? "waiting for the first token…" : statsText(msg.stats);
}

function renderConversation() {
  const conv = current();
  ui.messages.replaceChildren();
  if (!conv || conv.messages.length === 0) {
    ui.messages.appendChild(ui.empty);
    return;
  }
  conv.messages.forEach((msg, index) => {
    const node = messageNode(msg, conv, index);
    if (generation && generation.msg === msg) {
      generation.node = node;
      fillMessage(node, msg, true);
    }
    ui.messages.appendChild(node);
  });
  scrollToEnd(true);
}

function nearEnd() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToEnd(force) {
  if (force || nearEnd()) ui.messages.scrollTop = ui.messages.scrollHeight;
}

// ---- generation ------------------------------------------------------------------------

let generation = null;

function updateComposer() {
  const busy = Boolean(generation);
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.send.disabled = busy || ui.model.disabled || !ui.model.value;
}

async function send(text) {
  const model = ui.model.value;
  if (!model || generation) return;
  let conv = current();
  if (!conv) {
    conv = { id: newId(), title: text.split("\n")[0].slice(0, 60) || "New chat", model, created: Date.now(), updated: Date.now(), messages: [] };
    conversations.unshift(conv);
    currentId = conv.id;
  }
  conv.messages.push({ role: "user", content: text, at: Date.now() });
  await generate(conv);
}

// Writes an answer again: the conversation up to its question is asked anew, and the answer
// and everything after it are replaced.
function regenerate(conv, index) {
  if (generation || !ui.model.value) return;
  const msg = conv.messages[index];
  if (!msg || msg.role !== "assistant") return;
  conv.messages.splice(index);
  generate(conv);
}

// An earlier answer: what follows it would be lost, so the page asks first, in place.
function confirmRegenerate(node, conv, index) {
  if (node.querySelector(".confirm")) return;
  const msg = conv.messages[index];
  const later = conv.messages.length - index - 1;
  const bar = el("div", "confirm");
  bar.setAttribute("role", "group");
  bar.setAttribute("aria-label", "Confirm regenerating");
  const note = el("p", "muted small", `Regenerating replaces this answer and the ${later === 1 ? "message" : `${later} messages`} after it.`);
  const cancel = button("Cancel", "small");
  const replace = button("Replace them", "small primary");
  bar.append(note, cancel, replace);
  node.querySelector(".msg-body").after(bar);
  cancel.addEventListener("click", () => bar.remove());
  replace.addEventListener("click", () => {
    // The conversation changed meanwhile (another tab, an import): ask again.
    if (conv.messages[index] !== msg) return renderConversation();
    regenerate(conv, index);
  });
  replace.focus();
}

// Turns a user message into an editor; sending it replaces that message and everything
// after it.
function startEdit(node, conv, index) {
  const msg = conv.messages[index];
  const later = conv.messages.length - index - 1;
  const form = el("form", "edit");
  const area = el("textarea", "edit-text");
  area.value = msg.content;
  area.rows = Math.min(12, msg.content.split("\n").length + 1);
  area.setAttribute("aria-label", "Edit the message");
  const note = el("p", "muted small");
  note.textContent = later
    ? `Sending replaces the ${later === 1 ? "answer" : `${later} messages`} after this one.`
    : "Sending asks for an answer to the edited message.";
  const actions = el("div", "actions");
  const cancel = button("Cancel", "small");
  const submit = el("button", "small primary", "Send");
  submit.type = "submit";
  actions.append(cancel, submit);
  form.append(area, note, actions);
  const body = node.querySelector(".msg-body");
  body.replaceChildren(form);
  node.classList.add("editing");
  const close = () => renderConversation();
  cancel.addEventListener("click", close);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const edited = area.value;
    if (!edited.trim() || generation || !ui.model.value) return;
    if (conv.messages[index] !== msg) return close();
    // A title taken from the first message follows its edit.
    if (index === 0 && conv.title === msg.content.split("\n")[0].slice(0, 60)) {
      conv.title = edited.split("\n")[0].slice(0, 60) || conv.title;
    }
    conv.messages.splice(index);
    conv.messages.push({ role: "user", content: edited, at: Date.now() });
    generate(conv);
  });
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      close();
    }
  });
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

// Streams an answer to the conversation as it stands (its last message is the user's).
async function generate(conv) {
  const model = ui.model.value;
  if (!model || generation) return;
  clearNotice();
  conv.model = model;
  conv.updated = Date.now();
  save(KEYS.model, model);
  const msg = { role: "assistant", content: "", model, at: Date.now(), stats: {} };
  conv.messages.push(msg);
  persist();
  renderList();

  const history = conv.messages.slice(0, -1).map((m) => ({ role: m.role, content: m.content }));
  if (settings.system && settings.system.trim()) history.unshift({ role: "system", content: settings.system });

  const controller = new AbortController();
  generation = { convId: conv.id, msg, controller, node: null };
  updateComposer();
  renderConversation();

  const started = performance.now();
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (generation && generation.msg === msg && generation.node) {
        fillMessage(generation.node, msg, true);
        scrollToEnd(false);
      }
    });
  };

  // A remote model is served on the OpenAI API only: its events are read into the same
  // shape as Ollama's lines.
  const remote = remoteModels.has(model);
  try {
    const resp = remote
      ? await api("/v1/chat/completions", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ model, messages: history, stream: true, stream_options: { include_usage: true }, ...openAiOptions() }),
          signal: controller.signal,
        })
      : await api("/api/chat", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ model, messages: history, stream: true, format: answerFormat(), options: options() }),
          signal: controller.signal,
        });
    if (!resp.ok) throw new Error(await errorText(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    const handle = (line) => {
      if (!line.trim()) return;
      const chunk = remote ? fromOpenAiEvent(line) : JSON.parse(line);
      if (!chunk) return;
      if (chunk.error) throw new Error(chunk.error);
      const piece = (chunk.message && chunk.message.content) || "";
      if (piece) {
        if (msg.stats.ttft_ms === undefined) msg.stats.ttft_ms = performance.now() - started;
        msg.content += piece;
        msg.stats.streamed_count = (msg.stats.streamed_count || 0) + 1;
        redraw();
      }
      if (chunk.done) {
        for (const k of ["done_reason", "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"]) {
          if (chunk[k] !== undefined) msg.stats[k] = chunk[k];
        }
      }
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        handle(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
      }
    }
    handle(buffered + decoder.decode());
  } catch (e) {
    if (e.name === "AbortError") {
      msg.stats.stopped = true;
    } else {
      msg.stats.error = e.message;
      notify(`The answer failed: ${e.message}`, true);
    }
  } finally {
    generation = null;
    conv.updated = Date.now();
    persist();
    renderList();
    if (currentId === conv.id) renderConversation();
    updateComposer();
  }
}

// The page's settings as OpenAI request fields (for remote models).
function openAiOptions() {
  const o = {};
  if (settings.temperature !== undefined) o.temperature = settings.temperature;
  if (settings.top_p !== undefined) o.top_p = settings.top_p;
  if (settings.num_predict !== undefined) o.max_tokens = settings.num_predict;
  if (settings.seed !== undefined) o.seed = settings.seed;
  const format = answerFormat();
  if (format === "json") o.response_format = { type: "json_object" };
  else if (format) o.response_format = { type: "json_schema", json_schema: { name: "answer", schema: format } };
  return o;
}

// One line of an OpenAI event stream as an Ollama chat line (null: nothing to show).
function fromOpenAiEvent(line) {
  if (!line.startsWith("data:")) return null;
  const data = line.slice(5).trim();
  if (data === "[DONE]") return null;
  const v = JSON.parse(data);
  if (v.error) return { error: typeof v.error === "string" ? v.error : v.error.message || "the upstream failed" };
  const choice = (v.choices && v.choices[0]) || {};
  const out = { message: { content: (choice.delta && choice.delta.content) || "" } };
  if (choice.finish_reason) out.done_reason = choice.finish_reason;
  if (v.usage) Object.assign(out, { done: true, prompt_eval_count: v.usage.prompt_tokens, eval_count: v.usage.completion_tokens });
  if (choice.finish_reason) out.done = true;
  return out;
}

function stop() {
  if (generation) generation.controller.abort();
}

// ---- sidebar on small screens ----------------------------------------------------------

function openSidebar() {
  document.body.classList.add("sidebar-open");
  ui.backdrop.hidden = false;
  ui.toggleSidebar.setAttribute("aria-expanded", "true");
  ui.newChat.focus();
}

function closeSidebar() {
  if (!document.body.classList.contains("sidebar-open")) return;
  document.body.classList.remove("sidebar-open");
  ui.backdrop.hidden = true;
  ui.toggleSidebar.setAttribute("aria-expanded", "false");
}

// ---- wiring ----------------------------------------------------------------------------

function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, window.innerHeight * 0.4)}px`;
}

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.prompt.value;
  if (!text.trim() || generation || ui.send.disabled) return;
  ui.prompt.value = "";
  autosize();
  send(text);
});
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.prompt.addEventListener("input", autosize);
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", newChat);
ui.exportAll.addEventListener("click", () => {
  if (conversations.length === 0) {
    notify("There are no conversations to export.");
    return;
  }
  exportJson(conversations, `hearth-conversations-${new Date().toISOString().slice(0, 10)}.json`);
});
ui.importAll.addEventListener("click", () => ui.importFile.click());
ui.importFile.addEventListener("change", async () => {
  const file = ui.importFile.files[0];
  // Cleared first, so choosing the same file again still reads it.
  ui.importFile.value = "";
  if (file) await importFile(file);
});
ui.model.addEventListener("change", () => {
  save(KEYS.model, ui.model.value);
  updateComposer();
});
ui.openSettings.addEventListener("click", showSettings);
ui.settingsForm.addEventListener("submit", (e) => {
  const err = readSettings();
  if (err) {
    e.preventDefault();
    ui.settingsError.textContent = err;
    ui.settingsError.hidden = false;
  }
});
ui.settings.addEventListener("close", () => ui.prompt.focus());
ui.format.addEventListener("change", () => {
  ui.schemaField.hidden = ui.format.value !== "schema";
});
ui.resetSettings.addEventListener("click", () => {
  settings = {};
  save(KEYS.settings, settings);
  showSettingsValues();
});
ui.forgetKey.addEventListener("click", () => {
  apiKey = null;
  try {
    localStorage.removeItem(KEYS.apiKey);
  } catch (e) {
    // Nothing stored.
  }
  updateKeyButton();
  notify("The API key was forgotten; the page will ask again if the server needs one.");
});
ui.toggleSidebar.addEventListener("click", () => {
  if (document.body.classList.contains("sidebar-open")) closeSidebar();
  else openSidebar();
});
ui.backdrop.addEventListener("click", closeSidebar);

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    if (generation) {
      e.preventDefault();
      stop();
    } else if (document.body.classList.contains("sidebar-open")) {
      closeSidebar();
      ui.toggleSidebar.focus();
    }
  } else if (e.altKey && !e.ctrlKey && !e.metaKey && (e.key === "n" || e.key === "N")) {
    e.preventDefault();
    newChat();
  } else if (e.altKey && !e.ctrlKey && !e.metaKey && (e.key === "s" || e.key === "S")) {
    e.preventDefault();
    if (!ui.settings.open) showSettings();
  }
});
window.addEventListener("storage", (e) => {
  // Another tab changed the conversations: show them (unless this tab is mid-answer).
  if (e.key === KEYS.conversations && !generation) {
    conversations = load(KEYS.conversations, []);
    renderList();
    renderConversation();
  }
});

renderList();
renderConversation();
updateComposer();
updateKeyButton();
loadModels();
// On touch screens focusing would pop the keyboard over the page before the user asks.
if (window.matchMedia("(pointer: fine)").matches) ui.prompt.focus();
