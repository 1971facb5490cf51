//! llama.cpp's GBNF grammar notation, translated into llguidance's Lark syntax.
//!
//! Supported: `name ::= alternatives` (names of letters, digits, `-` and `_`; a rule runs on
//! over newlines until the next `name ::=`), `|`, grouping `( )`, `"literals"` and character
//! classes `[a-z]`, `[^"\\]` with the escapes `\n \r \t \" \\ \[ \] \xHH \uHHHH \UHHHHHHHH`,
//! `.` (any character), repetition `* + ? {m} {m,} {m,n}` and `#` comments. The grammar
//! starts at `root`.
//!
//! Every literal and every character class becomes its own llguidance lexeme, and repetition
//! stays in the grammar (not in a regex): a class matches exactly one character, so no lexeme
//! can be a longer match of another and the language is exactly GBNF's.

use std::collections::HashMap;
use std::fmt::Write;

/// Most repetitions one `{m,n}` may ask for.
pub const MAX_REPEAT: u32 = 10_000;

/// A GBNF syntax error, with the 1-based line and column where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GbnfError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for GbnfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for GbnfError {}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Literal(String),
    /// Ranges of characters (inclusive), negated or not.
    Class(bool, Vec<(char, char)>),
    Any,
    /// A rule reference: its name and where it was written (for "undefined rule").
    Rule(String, usize),
    Group(Vec<Vec<Term>>),
}

#[derive(Debug, Clone, PartialEq)]
struct Term {
    item: Item,
    min: u32,
    /// None: unbounded.
    max: Option<u32>,
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

/// Translates GBNF `text` into llguidance's Lark syntax.
pub fn to_lark(text: &str) -> Result<String, GbnfError> {
    let mut p = Parser { src: text, pos: 0 };
    let mut rules: Vec<(String, Vec<Vec<Term>>)> = Vec::new();
    let mut defined: HashMap<String, usize> = HashMap::new();
    p.skip_space();
    if p.at_end() {
        return Err(p.error_at(0, "the grammar is empty"));
    }
    while !p.at_end() {
        let at = p.pos;
        let name = p.name().ok_or_else(|| p.error("expected a rule name"))?;
        p.skip_space();
        if !p.eat("::=") {
            return Err(p.error(&format!("expected `::=` after the rule name `{name}`")));
        }
        if defined.contains_key(&name) {
            return Err(p.error_at(at, &format!("the rule `{name}` is defined twice")));
        }
        let alts = p.alternatives(0)?;
        p.skip_space();
        if !p.at_end() && !p.rule_starts_here() {
            return Err(p.error("unexpected character"));
        }
        defined.insert(name.clone(), rules.len());
        rules.push((name, alts));
    }
    let Some(&root) = defined.get("root") else {
        return Err(p.error_at(0, "there is no `root` rule (the grammar starts there)"));
    };
    for (_, alts) in &rules {
        check_refs(alts, &defined, &p)?;
    }
    let lark_name = |i: usize| format!("r{i}");
    let mut out = String::new();
    let _ = writeln!(out, "start: {}", lark_name(root));
    for (i, (name, alts)) in rules.iter().enumerate() {
        let _ = writeln!(out, "// {name}");
        let _ = write!(out, "{}: ", lark_name(i));
        write_alts(&mut out, alts, &defined, &lark_name);
        out.push('\n');
    }
    Ok(out)
}

fn check_refs(
    alts: &[Vec<Term>],
    defined: &HashMap<String, usize>,
    p: &Parser<'_>,
) -> Result<(), GbnfError> {
    for t in alts.iter().flatten() {
        match &t.item {
            Item::Rule(name, at) if !defined.contains_key(name) => {
                return Err(p.error_at(*at, &format!("the rule `{name}` is not defined")));
            }
            Item::Group(inner) => check_refs(inner, defined, p)?,
            _ => {}
        }
    }
    Ok(())
}

fn write_alts(
    out: &mut String,
    alts: &[Vec<Term>],
    defined: &HashMap<String, usize>,
    lark_name: &dyn Fn(usize) -> String,
) {
    for (i, seq) in alts.iter().enumerate() {
        if i > 0 {
            out.push_str(" | ");
        }
        let terms: Vec<&Term> = seq.iter().filter(|t| t.max != Some(0)).collect();
        if terms.is_empty() {
            // The empty sequence.
            out.push_str("\"\"");
        }
        for (j, t) in terms.iter().enumerate() {
            if j > 0 {
                out.push(' ');
            }
            write_item(out, &t.item, defined, lark_name);
            match (t.min, t.max) {
                (1, Some(1)) => {}
                (0, Some(1)) => out.push('?'),
                (0, None) => out.push('*'),
                (1, None) => out.push('+'),
                (m, None) => {
                    let _ = write!(out, "{{{m},}}");
                }
                (m, Some(n)) if m == n => {
                    let _ = write!(out, "{{{m}}}");
                }
                (m, Some(n)) => {
                    let _ = write!(out, "{{{m},{n}}}");
                }
            }
        }
    }
}

fn write_item(
    out: &mut String,
    item: &Item,
    defined: &HashMap<String, usize>,
    lark_name: &dyn Fn(usize) -> String,
) {
    match item {
        Item::Literal(s) => out.push_str(&lark_string(s)),
        Item::Any => out.push_str("/(?s:.)/"),
        Item::Class(negated, ranges) => {
            out.push_str("/[");
            if *negated {
                out.push('^');
            }
            for &(a, b) in ranges {
                let _ = write!(out, "\\x{{{:x}}}", a as u32);
                if a != b {
                    let _ = write!(out, "-\\x{{{:x}}}", b as u32);
                }
            }
            out.push_str("]/");
        }
        Item::Rule(name, _) => out.push_str(&lark_name(defined[name])),
        Item::Group(alts) => {
            out.push('(');
            write_alts(out, alts, defined, lark_name);
            out.push(')');
        }
    }
}

/// A Lark string literal (JSON string syntax; Lark also refuses a raw DEL).
fn lark_string(s: &str) -> String {
    let json = serde_json::Value::String(s.to_string()).to_string();
    json.replace('\u{7f}', "\\u007f")
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Skips spaces, newlines and `#` comments.
    fn skip_space(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                _ => return,
            }
        }
    }

    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                self.bump();
            } else {
                break;
            }
        }
        (self.pos > start).then(|| self.src[start..self.pos].to_string())
    }

    /// Whether the next thing is `name ::=` (the next rule).
    fn rule_starts_here(&self) -> bool {
        let mut probe = Parser {
            src: self.src,
            pos: self.pos,
        };
        if probe.name().is_none() {
            return false;
        }
        probe.skip_space();
        probe.rest().starts_with("::=")
    }

    fn alternatives(&mut self, depth: usize) -> Result<Vec<Vec<Term>>, GbnfError> {
        if depth > 100 {
            return Err(self.error("groups are nested too deeply"));
        }
        let mut alts = vec![self.sequence(depth)?];
        loop {
            self.skip_space();
            if self.eat("|") {
                alts.push(self.sequence(depth)?);
            } else {
                return Ok(alts);
            }
        }
    }

    fn sequence(&mut self, depth: usize) -> Result<Vec<Term>, GbnfError> {
        let mut seq = Vec::new();
        loop {
            self.skip_space();
            let at = self.pos;
            let item = match self.peek() {
                None | Some('|') | Some(')') => return Ok(seq),
                Some('"') => {
                    self.bump();
                    Item::Literal(self.literal()?)
                }
                Some('[') => {
                    self.bump();
                    self.class()?
                }
                Some('.') => {
                    self.bump();
                    Item::Any
                }
                Some('(') => {
                    self.bump();
                    let alts = self.alternatives(depth + 1)?;
                    self.skip_space();
                    if !self.eat(")") {
                        return Err(self.error("expected `)`"));
                    }
                    Item::Group(alts)
                }
                Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                    if self.rule_starts_here() {
                        return Ok(seq);
                    }
                    let name = self.name().unwrap_or_default();
                    Item::Rule(name, at)
                }
                Some(c) => return Err(self.error(&format!("unexpected `{c}`"))),
            };
            let (min, max) = self.repetition()?;
            seq.push(Term { item, min, max });
        }
    }

    /// An optional `* + ? {m} {m,} {m,n}` after an item.
    fn repetition(&mut self) -> Result<(u32, Option<u32>), GbnfError> {
        if self.eat("*") {
            return Ok((0, None));
        }
        if self.eat("+") {
            return Ok((1, None));
        }
        if self.eat("?") {
            return Ok((0, Some(1)));
        }
        if !self.eat("{") {
            return Ok((1, Some(1)));
        }
        self.skip_space();
        let min = self.number()?;
        self.skip_space();
        let max = if self.eat(",") {
            self.skip_space();
            if self.peek() == Some('}') {
                None
            } else {
                Some(self.number()?)
            }
        } else {
            Some(min)
        };
        self.skip_space();
        if !self.eat("}") {
            return Err(self.error("expected `}` to close the repetition"));
        }
        if let Some(max) = max {
            if max < min {
                return Err(self.error(&format!("the repetition {{{min},{max}}} is empty")));
            }
        }
        Ok((min, max))
    }

    fn number(&mut self) -> Result<u32, GbnfError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        let digits = &self.src[start..self.pos];
        if digits.is_empty() {
            return Err(self.error("expected a number"));
        }
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPEAT => Ok(n),
            _ => Err(self.error_at(
                start,
                &format!("repetition counts are at most {MAX_REPEAT}"),
            )),
        }
    }

    /// The rest of a `"literal"` (the opening quote is read).
    fn literal(&mut self) -> Result<String, GbnfError> {
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error("the string is not closed with `\"`")),
                Some('"') => return Ok(s),
                Some('\\') => s.push(self.escape()?),
                Some('\n') => return Err(self.error("a string cannot span lines")),
                Some(c) => s.push(c),
            }
        }
    }

    /// The rest of a `[class]` (the `[` is read).
    fn class(&mut self) -> Result<Item, GbnfError> {
        let negated = self.eat("^");
        let mut ranges = Vec::new();
        loop {
            let a = match self.bump() {
                None => return Err(self.error("the character class is not closed with `]`")),
                Some(']') => return Ok(Item::Class(negated, ranges)),
                Some('\\') => self.escape()?,
                Some(c) => c,
            };
            let b = if self.rest().starts_with('-') && !self.rest().starts_with("-]") {
                self.bump();
                match self.bump() {
                    None => return Err(self.error("the character class is not closed")),
                    Some('\\') => self.escape()?,
                    Some(c) => c,
                }
            } else {
                a
            };
            if b < a {
                return Err(self.error(&format!("the range {a:?}-{b:?} is backwards")));
            }
            ranges.push((a, b));
        }
    }

    /// The character after a backslash.
    fn escape(&mut self) -> Result<char, GbnfError> {
        let at = self.pos;
        let hex = |p: &mut Self, n: usize| -> Result<char, GbnfError> {
            let digits = p.rest().get(..n).unwrap_or("");
            let code = (digits.len() == n && digits.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(digits, 16).ok())
                .flatten()
                .ok_or_else(|| p.error(&format!("expected {n} hex digits")))?;
            p.pos += n;
            char::from_u32(code)
                .ok_or_else(|| p.error_at(at, &format!("U+{code:X} is not a character")))
        };
        match self.bump() {
            Some('n') => Ok('\n'),
            Some('r') => Ok('\r'),
            Some('t') => Ok('\t'),
            Some(c @ ('"' | '\\' | '[' | ']' | '-' | '^' | '/')) => Ok(c),
            Some('x') => hex(self, 2),
            Some('u') => hex(self, 4),
            Some('U') => hex(self, 8),
            Some(c) => Err(self.error_at(at, &format!("unknown escape `\\{c}`"))),
            None => Err(self.error("the grammar ends after `\\`")),
        }
    }

    fn error(&self, message: &str) -> GbnfError {
        self.error_at(self.pos, message)
    }

    fn error_at(&self, at: usize, message: &str) -> GbnfError {
        let at = at.min(self.src.len());
        let before = &self.src[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        GbnfError {
            line,
            column,
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_become_lark() {
        let lark = to_lark(
            "# a comment\nroot ::= item (\", \" item)*  # list\nitem ::= [a-z]+ | \"x\\n\"{2,3}\n",
        )
        .unwrap();
        assert!(lark.starts_with("start: r0\n"), "{lark}");
        assert!(lark.contains("r0: r1 (\", \" r1)*"), "{lark}");
        assert!(
            lark.contains("r1: /[\\x{61}-\\x{7a}]/+ | \"x\\n\"{2,3}"),
            "{lark}"
        );
    }

    #[test]
    fn multi_line_rules_and_dashes() {
        let lark =
            to_lark("root ::=\n  first-rule\n  | \"b\"\nfirst-rule ::= (\n  \"a\"\n  \"c\"\n)\n")
                .unwrap();
        assert!(lark.contains("r0: r1 | \"b\""), "{lark}");
        assert!(lark.contains("r1: (\"a\" \"c\")"), "{lark}");
    }

    #[test]
    fn escapes_and_classes() {
        let lark = to_lark(r#"root ::= "\"\\\x41\u00e9\t" [^"\\] . [\]\-]"#).unwrap();
        assert!(lark.contains(r#""\"\\Aé\t""#), "{lark}");
        assert!(lark.contains(r"/[^\x{22}\x{5c}]/"), "{lark}");
        assert!(lark.contains("/(?s:.)/"), "{lark}");
        assert!(lark.contains(r"/[\x{5d}\x{2d}]/"), "{lark}");
        let lark = to_lark("root ::= \"a\"{0} \"b\"{3,} \"c\"{2}").unwrap();
        assert!(lark.contains("r0: \"b\"{3,} \"c\"{2}"), "{lark}");
        let lark = to_lark("root ::= \"a\" | ").unwrap();
        assert!(lark.contains("r0: \"a\" | \"\""), "{lark}");
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&str, usize, usize, &str)] = &[
            ("", 1, 1, "empty"),
            (
                "root ::= \"a\"\nitem ::= \"b\" | unknown",
                2,
                16,
                "`unknown` is not defined",
            ),
            ("item ::= \"a\"", 1, 1, "no `root`"),
            ("root ::= \"abc", 1, 14, "not closed"),
            ("root ::= [a-", 1, 13, "not closed"),
            ("root ::= \"\\q\"", 1, 12, "unknown escape"),
            ("root ::= \"a\"{5,2}", 1, 18, "empty"),
            ("root ::= \"a\"{1000000}", 1, 14, "at most"),
            ("root ::= (\"a\"", 1, 14, "expected `)`"),
            ("root \"a\"", 1, 6, "expected `::=`"),
            ("root ::= \"a\"\nroot ::= \"b\"", 2, 1, "defined twice"),
            ("root ::= \"a\" ; \"b\"", 1, 14, "unexpected `;`"),
            ("root ::= [z-a]", 1, 14, "backwards"),
            ("root ::= \"\\uD800\"", 1, 12, "not a character"),
        ];
        for &(src, line, column, what) in cases {
            let e = to_lark(src).unwrap_err();
            assert!(
                e.line == line && e.column == column && e.message.contains(what),
                "{src:?}: {e}"
            );
        }
    }
}
