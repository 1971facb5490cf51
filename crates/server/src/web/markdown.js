// A small Markdown renderer that builds DOM nodes. Text only ever reaches the page through
// createTextNode/textContent, so a model's output cannot become HTML that runs.
//
// Blocks: paragraphs, ATX headings, bullet and numbered lists, block quotes, rules, GFM pipe
// tables and fenced code blocks (highlighted by highlight.js, with a copy button). Inline:
// `code`, **bold**, *italic*, _italic_, ~~strike~~ and [links](https://...) for http(s)
// targets only (anything else stays text).

import { highlight } from "./highlight.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+\s*)?$/;
const BULLET = /^(\s*)([-*+])\s+(.*)$/;
const ORDERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
// A table's delimiter row: | --- | :---: | ---: | (outer pipes optional).
const TABLE_DELIMITER = /^ {0,3}\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$/;
// Tables wider than this are shown as text rather than built (a model's runaway output).
const MAX_TABLE_COLUMNS = 64;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/// Copies text, with a fallback for browsers without the async clipboard.
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = el("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("the browser refused to copy");
}

function codeBlock(code, lang) {
  const figure = el("figure", "code");
  const bar = el("div", "code-bar");
  bar.appendChild(el("span", "code-lang", lang || "code"));
  const button = el("button", "copy", "Copy");
  button.type = "button";
  button.setAttribute("aria-label", lang ? `Copy ${lang} code` : "Copy code");
  button.addEventListener("click", async () => {
    try {
      await copyText(code);
      button.textContent = "Copied";
    } catch (e) {
      button.textContent = "Copy failed";
    }
    setTimeout(() => (button.textContent = "Copy"), 1500);
  });
  bar.appendChild(button);
  figure.appendChild(bar);
  const pre = el("pre");
  const codeEl = el("code");
  codeEl.appendChild(highlight(code, lang));
  if (lang) codeEl.dataset.lang = lang;
  pre.appendChild(codeEl);
  figure.appendChild(pre);
  return figure;
}

function safeUrl(href) {
  try {
    const url = new URL(href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch (e) {
    return null;
  }
}

// Inline spans, appended to `parent`. Delimiters that do not close stay literal text.
function inline(parent, text) {
  let plain = "";
  const flush = () => {
    if (plain) parent.appendChild(document.createTextNode(plain));
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const rest = text.slice(i);
    if (c === "\\" && i + 1 < text.length && /[\\`*_~\[\]()#>+\-.!]/.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      const ticks = rest.match(/^`+/)[0];
      const end = text.indexOf(ticks, i + ticks.length);
      if (end > 0) {
        flush();
        parent.appendChild(el("code", null, text.slice(i + ticks.length, end).trim() || " "));
        i = end + ticks.length;
        continue;
      }
    }
    const pairs = [
      ["**", "strong"],
      ["__", "strong"],
      ["~~", "del"],
      ["*", "em"],
      ["_", "em"],
    ];
    let matched = false;
    for (const [delim, tag] of pairs) {
      if (!rest.startsWith(delim)) continue;
      const after = text[i + delim.length];
      if (after === undefined || /\s/.test(after)) continue;
      // An underscore inside a word (snake_case) is not emphasis.
      if (delim[0] === "_" && i > 0 && /\w/.test(text[i - 1])) continue;
      let end = text.indexOf(delim, i + delim.length + 1);
      while (end > 0 && delim.length === 1 && text[end + 1] === delim) {
        end = text.indexOf(delim, end + 2);
      }
      if (end > 0 && !/\s/.test(text[end - 1])) {
        flush();
        const node = el(tag);
        inline(node, text.slice(i + delim.length, end));
        parent.appendChild(node);
        i = end + delim.length;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    if (c === "[") {
      const link = rest.match(/^\[([^\]\n]+)\]\(\s*<?([^()\s<>]+)>?(?:\s+"[^"]*")?\s*\)/);
      const url = link && safeUrl(link[2]);
      if (url) {
        flush();
        const a = el("a");
        a.href = url;
        a.rel = "noopener noreferrer nofollow";
        a.target = "_blank";
        a.title = url;
        inline(a, link[1]);
        parent.appendChild(a);
        i += link[0].length;
        continue;
      }
    }
    plain += c;
    i += 1;
  }
  flush();
}

// A row's cells: split on pipes that are not escaped (\| is a pipe inside a cell, even in
// `code`), without the optional outer pipes.
function cells(line) {
  const out = [];
  let cell = "";
  const text = line.trim();
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\\" && text[i + 1] === "|") {
      cell += "|";
      i += 1;
    } else if (c === "|") {
      out.push(cell);
      cell = "";
    } else {
      cell += c;
    }
  }
  out.push(cell);
  if (text.startsWith("|")) out.shift();
  if (text.endsWith("|") && !text.endsWith("\\|") && out.length > 0) out.pop();
  return out.map((c) => c.trim());
}

// Whether lines[i] is a table's header row: it has a pipe and the next line is a delimiter
// row with as many cells.
function tableStart(lines, i) {
  const head = lines[i];
  const delimiter = lines[i + 1];
  if (delimiter === undefined || !head.includes("|") || !TABLE_DELIMITER.test(delimiter)) return false;
  const n = cells(head).length;
  return n > 0 && n <= MAX_TABLE_COLUMNS && n === cells(delimiter).length;
}

function table(lines, start) {
  const head = cells(lines[start]);
  const align = cells(lines[start + 1]).map((d) => {
    const left = d.startsWith(":");
    const right = d.endsWith(":");
    return left && right ? "center" : right ? "right" : left ? "left" : "";
  });
  const row = (values, tag) => {
    const tr = el("tr");
    head.forEach((_, n) => {
      const cell = el(tag, align[n] ? `align-${align[n]}` : null);
      inline(cell, values[n] || "");
      tr.appendChild(cell);
    });
    return tr;
  };
  const wrap = el("div", "table-wrap");
  const tableEl = el("table");
  const thead = el("thead");
  thead.appendChild(row(head, "th"));
  tableEl.appendChild(thead);
  let i = start + 2;
  const tbody = el("tbody");
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "" || !line.includes("|") || FENCE.test(line) || HEADING.test(line) || QUOTE.test(line)) break;
    tbody.appendChild(row(cells(line), "td"));
    i += 1;
  }
  if (tbody.childNodes.length > 0) tableEl.appendChild(tbody);
  wrap.appendChild(tableEl);
  return [wrap, i];
}

function paragraph(lines) {
  const p = el("p");
  lines.forEach((line, n) => {
    if (n > 0) {
      // Markdown's hard break (two trailing spaces) and plain soft breaks both show as one.
      p.appendChild(el("br"));
    }
    inline(p, line.replace(/\s+$/, ""));
  });
  return p;
}

// Lists: items by marker; deeper indented lines (including nested lists) belong to the item.
function list(lines, start) {
  const first = lines[start].match(BULLET) || lines[start].match(ORDERED);
  const ordered = !lines[start].match(BULLET);
  const indent = first[1].length;
  const listEl = el(ordered ? "ol" : "ul");
  if (ordered && first[2] !== "1") listEl.start = Number(first[2]);
  let i = start;
  while (i < lines.length) {
    const m = ordered ? lines[i].match(ORDERED) : lines[i].match(BULLET);
    if (!m || m[1].length !== indent) break;
    const body = [m[3]];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (line.trim() === "") {
        // A blank line ends the item unless an indented continuation follows.
        const next = lines[i + 1];
        if (next !== undefined && next.match(/^(\s*)/)[1].length > indent && next.trim() !== "") {
          body.push("");
          i += 1;
          continue;
        }
        break;
      }
      const lead = line.match(/^(\s*)/)[1].length;
      if (lead <= indent && (BULLET.test(line) || ORDERED.test(line))) break;
      if (lead <= indent && (FENCE.test(line) || HEADING.test(line) || QUOTE.test(line))) break;
      body.push(line.slice(Math.min(lead, indent + 2)));
      i += 1;
    }
    const li = el("li");
    const inner = blocks(body);
    // A tight item: its single paragraph's content goes straight into the <li>.
    if (inner.childNodes.length === 1 && inner.firstChild.tagName === "P") {
      while (inner.firstChild.firstChild) li.appendChild(inner.firstChild.firstChild);
    } else {
      li.appendChild(inner);
    }
    listEl.appendChild(li);
  }
  return [listEl, i];
}

function blocks(lines) {
  const frag = document.createDocumentFragment();
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    const fence = line.match(FENCE);
    if (fence) {
      const marker = fence[1];
      const body = [];
      i += 1;
      while (i < lines.length) {
        const t = lines[i].trim();
        if (t.startsWith(marker[0].repeat(marker.length)) && /^[`~]+$/.test(t)) {
          i += 1;
          break;
        }
        body.push(lines[i]);
        i += 1;
      }
      frag.appendChild(codeBlock(body.join("\n"), fence[2]));
      continue;
    }
    if (RULE.test(line)) {
      frag.appendChild(el("hr"));
      i += 1;
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      const h = el(`h${Math.min(6, heading[1].length + 2)}`, "md-heading");
      h.dataset.level = String(heading[1].length);
      inline(h, heading[2]);
      frag.appendChild(h);
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        body.push(lines[i].match(QUOTE)[1]);
        i += 1;
      }
      const q = el("blockquote");
      q.appendChild(blocks(body));
      frag.appendChild(q);
      continue;
    }
    if (tableStart(lines, i)) {
      const [node, next] = table(lines, i);
      frag.appendChild(node);
      i = next;
      continue;
    }
    if (BULLET.test(line) || ORDERED.test(line)) {
      const [node, next] = list(lines, i);
      frag.appendChild(node);
      i = next;
      continue;
    }
    const para = [];
    while (
      i < lines.length &&
      lines[i].trim() !== "" &&
      !FENCE.test(lines[i]) &&
      !HEADING.test(lines[i]) &&
      !QUOTE.test(lines[i]) &&
      !RULE.test(lines[i]) &&
      !tableStart(lines, i) &&
      !(para.length > 0 && (BULLET.test(lines[i]) || ORDERED.test(lines[i])))
    ) {
      para.push(lines[i]);
      i += 1;
    }
    frag.appendChild(paragraph(para));
  }
  return frag;
}

/// Renders Markdown text into a DocumentFragment of safe nodes.
export function renderMarkdown(text) {
  return blocks(String(text).replace(/\r\n?/g, "\n").split("\n"));
}
