// A small syntax highlighter for fenced code blocks: keywords, strings, comments and numbers
// in common languages. It builds DOM nodes only (<span class="tok-…"> around text nodes),
// so the code a model writes stays text, whatever it holds. Unknown languages stay plain.

const words = (s) => new Set(s.split(/\s+/).filter(Boolean));

const C_LIKE = "if else for while do switch case default break continue return goto";
const JS = {
  keywords: words(`${C_LIKE} var let const function class extends new delete typeof instanceof in of
    void this super import export from as async await yield try catch finally throw static get set
    interface type enum implements private public protected readonly declare namespace abstract keyof`),
  literals: words("true false null undefined NaN Infinity"),
  line: ["//"],
  block: [["/*", "*/"]],
  strings: ["'", '"', "`"],
  multiline: ["`"],
};
const PYTHON = {
  keywords: words(`if elif else for while break continue return def class lambda import from as with
    try except finally raise pass global nonlocal yield async await assert del in is not and or match case`),
  literals: words("True False None self"),
  line: ["#"],
  block: [],
  strings: ['"""', "'''", "'", '"'],
  multiline: ['"""', "'''"],
  prefixes: /(?:^|[^\w$])([rRbBuUfF]{1,2})$/,
};
const RUST = {
  keywords: words(`${C_LIKE} fn let mut const static struct enum trait impl type where pub crate mod use
    super self Self as in loop match move ref unsafe async await dyn extern macro_rules`),
  literals: words("true false None Some Ok Err"),
  line: ["//"],
  block: [["/*", "*/"]],
  strings: ['"'],
  multiline: ['"'],
  chars: true,
};
const C = {
  keywords: words(`${C_LIKE} int char float double long short signed unsigned void bool auto const
    static extern struct union enum typedef sizeof volatile register inline restrict class public private
    protected virtual override template typename namespace using new delete this operator friend
    constexpr nullptr try catch throw noexcept std #include #define #ifdef #ifndef #endif #if #else #pragma`),
  literals: words("true false NULL nullptr"),
  line: ["//"],
  block: [["/*", "*/"]],
  strings: ['"'],
  chars: true,
};
const JAVA = {
  keywords: words(`${C_LIKE} class interface enum extends implements new this super import package
    public private protected static final abstract void int long short byte char float double boolean
    try catch finally throw throws synchronized instanceof var record sealed permits fun val when object
    override open data companion namespace using`),
  literals: words("true false null"),
  line: ["//"],
  block: [["/*", "*/"]],
  strings: ['"'],
  chars: true,
};
const GO = {
  keywords: words(`${C_LIKE} func package import var const type struct interface map chan go defer
    select range fallthrough`),
  literals: words("true false nil iota"),
  line: ["//"],
  block: [["/*", "*/"]],
  strings: ['"', "`", "'"],
  multiline: ["`"],
};
const SHELL = {
  keywords: words(`if then else elif fi for while until do done case esac in function return local
    export readonly unset shift exit echo cd set source`),
  literals: words("true false"),
  line: ["#"],
  block: [],
  strings: ['"', "'"],
  multiline: ['"', "'"],
};
const SQL = {
  keywords: words(`select from where and or not insert into values update set delete create table
    drop alter index view join left right inner outer full on as group by order having limit offset
    union all distinct primary key foreign references default null is in like between case when then
    else end begin commit rollback with returning exists asc desc integer text real varchar`),
  literals: words("true false null"),
  line: ["--"],
  block: [["/*", "*/"]],
  strings: ["'", '"'],
  caseless: true,
};
const JSON_SPEC = { keywords: words(""), literals: words("true false null"), line: [], block: [], strings: ['"'] };
const YAML = { keywords: words(""), literals: words("true false null yes no on off"), line: ["#"], block: [], strings: ['"', "'"] };
const TOML = { keywords: words(""), literals: words("true false"), line: ["#"], block: [], strings: ['"""', "'''", '"', "'"], multiline: ['"""', "'''"] };
const CSS = { keywords: words("important media import from to"), literals: words(""), line: [], block: [["/*", "*/"]], strings: ['"', "'"] };
const MARKUP = { markup: true };

const LANGUAGES = new Map();
for (const [spec, names] of [
  [JS, "js javascript jsx mjs cjs ts typescript tsx node"],
  [PYTHON, "py python python3"],
  [RUST, "rs rust"],
  [C, "c h cpp c++ cc cxx hpp cuda"],
  [JAVA, "java kotlin kt cs csharp c# scala swift dart php"],
  [GO, "go golang"],
  [SHELL, "sh bash shell zsh console shellsession dockerfile make makefile"],
  [SQL, "sql sqlite postgres postgresql mysql"],
  [JSON_SPEC, "json jsonc json5"],
  [YAML, "yaml yml"],
  [TOML, "toml ini"],
  [CSS, "css scss less"],
  [MARKUP, "html xml svg xhtml vue"],
]) {
  for (const name of names.split(" ")) LANGUAGES.set(name, spec);
}

/// Whether `lang` (a fence's info word) is one the highlighter knows.
export function knownLanguage(lang) {
  return LANGUAGES.has(String(lang || "").toLowerCase());
}

const NUMBER = /(?:0[xX][\da-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[\w]*/y;
const WORD = /[A-Za-z_$#][\w$]*/y;
const RUST_LIFETIME = /'[A-Za-z_]\w*(?!')/y;

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

// Appends the tokens of `code` to `out`, with `plain` collecting untokenized text.
function tokens(code, spec, out) {
  let plain = "";
  const emit = (cls, text) => {
    if (plain) out.appendChild(document.createTextNode(plain));
    plain = "";
    out.appendChild(span(cls, text));
  };
  const at = (s, i) => code.startsWith(s, i);
  let i = 0;
  while (i < code.length) {
    const c = code[i];
    const prev = i > 0 ? code[i - 1] : "";
    let matched = false;
    for (const [open, close] of spec.block) {
      if (!at(open, i)) continue;
      const end = code.indexOf(close, i + open.length);
      const stop = end < 0 ? code.length : end + close.length;
      emit("tok-com", code.slice(i, stop));
      i = stop;
      matched = true;
      break;
    }
    if (matched) continue;
    if (spec.line.some((l) => at(l, i)) && !(c === "#" && /[\w$]/.test(prev))) {
      const end = code.indexOf("\n", i);
      const stop = end < 0 ? code.length : end;
      emit("tok-com", code.slice(i, stop));
      i = stop;
      continue;
    }
    if (spec.chars && c === "'") {
      // Rust lifetimes ('a) are not characters; 'x' and '\n' are.
      RUST_LIFETIME.lastIndex = i;
      const life = spec === RUST && RUST_LIFETIME.exec(code);
      if (life) {
        emit("tok-kw", life[0]);
        i += life[0].length;
        continue;
      }
    }
    let quote = spec.strings.find((q) => at(q, i)) || (spec.chars && c === "'" ? "'" : null);
    // An apostrophe inside a word (don't, it's) opens no string, unless a string prefix
    // (Python's r'', f'') stands before it.
    if (quote === "'" && /\w/.test(prev) && !(spec.prefixes && spec.prefixes.test(plain))) quote = null;
    if (quote) {
      const multiline = (spec.multiline || []).includes(quote);
      let j = i + quote.length;
      while (j < code.length && !at(quote, j)) {
        if (code[j] === "\\" && quote !== "'''" && !(spec === SHELL && quote === "'")) j += 1;
        else if (code[j] === "\n" && !multiline) break;
        j += 1;
      }
      const stop = Math.min(code.length, at(quote, j) ? j + quote.length : j);
      // A string prefix (Python's f"", r"", b"") joins the string.
      const prefix = spec.prefixes && plain.match(spec.prefixes);
      if (prefix) {
        plain = plain.slice(0, -prefix[1].length);
        emit("tok-str", prefix[1] + code.slice(i, stop));
      } else {
        emit("tok-str", code.slice(i, stop));
      }
      i = stop;
      continue;
    }
    if (/[\d.]/.test(c) && !/[\w$]/.test(prev)) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(code);
      if (m && /\d/.test(m[0])) {
        emit("tok-num", m[0]);
        i += m[0].length;
        continue;
      }
    }
    if (/[A-Za-z_$#]/.test(c) && !/[\w$]/.test(prev)) {
      WORD.lastIndex = i;
      const m = WORD.exec(code);
      // "#" only starts a word in C (#include); elsewhere it is a comment or plain text.
      if (m && (c !== "#" || spec === C)) {
        const word = spec.caseless ? m[0].toLowerCase() : m[0];
        if (spec.keywords.has(word)) emit("tok-kw", m[0]);
        else if (spec.literals.has(word)) emit("tok-lit", m[0]);
        else if (code[i + m[0].length] === "(" && spec !== SQL) emit("tok-fn", m[0]);
        else plain += m[0];
        i += m[0].length;
        continue;
      }
    }
    plain += c;
    i += 1;
  }
  if (plain) out.appendChild(document.createTextNode(plain));
}

// HTML and XML: comments, tag names and attribute values (text between tags stays plain).
function markup(code, out) {
  let plain = "";
  const emit = (cls, text) => {
    if (plain) out.appendChild(document.createTextNode(plain));
    plain = "";
    out.appendChild(span(cls, text));
  };
  const TAG = /<\/?[A-Za-z][\w:.-]*|<!doctype\b/iy;
  let inTag = false;
  let i = 0;
  while (i < code.length) {
    const c = code[i];
    if (!inTag && code.startsWith("<!--", i)) {
      const end = code.indexOf("-->", i + 4);
      const stop = end < 0 ? code.length : end + 3;
      emit("tok-com", code.slice(i, stop));
      i = stop;
      continue;
    }
    if (!inTag && c === "<") {
      TAG.lastIndex = i;
      const m = TAG.exec(code);
      if (m) {
        plain += "<";
        emit("tok-kw", m[0].slice(1));
        i += m[0].length;
        inTag = true;
        continue;
      }
    }
    if (inTag && (c === '"' || c === "'")) {
      const end = code.indexOf(c, i + 1);
      const stop = end < 0 ? code.length : end + 1;
      emit("tok-str", code.slice(i, stop));
      i = stop;
      continue;
    }
    if (inTag && c === ">") inTag = false;
    plain += c;
    i += 1;
  }
  if (plain) out.appendChild(document.createTextNode(plain));
}

/// Returns a DocumentFragment of `code` with its tokens in spans (`tok-kw`, `tok-lit`,
/// `tok-str`, `tok-com`, `tok-num`, `tok-fn`); plain text when the language is unknown. Its
/// text content is always exactly `code`.
export function highlight(code, lang) {
  const frag = document.createDocumentFragment();
  const spec = LANGUAGES.get(String(lang || "").toLowerCase());
  if (!spec) frag.appendChild(document.createTextNode(code));
  else if (spec.markup) markup(code, frag);
  else tokens(code, spec, frag);
  return frag;
}
