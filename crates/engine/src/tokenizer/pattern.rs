//! A small backtracking matcher for the pre-tokenizer patterns that have no hand-written scanner.
//!
//! It understands the ECMAScript subset those patterns use: alternation, `(…)`, `(?:…)`,
//! lookahead `(?=…)`/`(?!…)`, greedy `? * + {n} {n,} {n,m}`, classes with ranges and negation,
//! `\s \S \d \D \w \W`, `\p{L}`-style categories, `$`, and literals (any code point).
//!
//! Matching follows llama.cpp, which runs `std::regex` over a copy of the text where every
//! non-ASCII whitespace code point became U+000B and, when the pattern uses `\p{…}`, every other
//! non-ASCII code point became a byte standing for its category. Here that means: a non-ASCII
//! whitespace code point matches only `\s` (and literals/ranges that contain U+000B), and `\p{X}`
//! matches a code point whose major category is X (`\p{Lu}`, `\p{Ll}`, … all mean `\p{L}`).
//!
//! A repetition of something that always consumes exactly one code point runs as a loop, so long
//! runs of letters or spaces never deepen the stack. Other repetitions must be bounded (at most
//! [`MAX_GROUP_REPEAT`]) and no pattern may match the empty string; [`Pattern::new`] refuses both.

use super::unicode::{self, LETTER, MARK, NUMBER, PUNCTUATION, SEPARATOR, SYMBOL, WHITESPACE};

/// The most times a group that is not a single code point may repeat.
pub(crate) const MAX_GROUP_REPEAT: u32 = 16;

/// A code point with its [`unicode::flags`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cp {
    pub cp: u32,
    pub flags: u16,
}

impl Cp {
    pub(crate) fn new(c: char) -> Cp {
        let cp = c as u32;
        Cp {
            cp,
            flags: unicode::flags(cp),
        }
    }

    /// The code point llama.cpp's regex sees: non-ASCII whitespace turns into U+000B.
    fn effective(self) -> u32 {
        if self.cp >= 0x80 && self.flags & WHITESPACE != 0 {
            0x0B
        } else {
            self.cp
        }
    }

    fn in_category(self, mask: u16) -> bool {
        !(self.cp >= 0x80 && self.flags & WHITESPACE != 0) && self.flags & mask != 0
    }
}

#[derive(Clone, Debug)]
enum Item {
    Range(u32, u32),
    Category(u16),
    Space,
    Digit,
    Word,
    /// `\S`, `\D`, `\W` inside a class.
    Not(Box<Item>),
}

impl Item {
    fn matches(&self, c: Cp) -> bool {
        match self {
            Item::Range(lo, hi) => (*lo..=*hi).contains(&c.effective()),
            Item::Category(mask) => c.in_category(*mask),
            Item::Space => matches!(c.effective(), 0x09..=0x0D | 0x20),
            Item::Digit => (0x30..=0x39).contains(&c.effective()),
            Item::Word => {
                let e = c.effective();
                e < 0x80 && (e as u8).is_ascii_alphanumeric() || e == u32::from(b'_')
            }
            Item::Not(inner) => !inner.matches(c),
        }
    }
}

/// A test on one code point.
#[derive(Clone, Debug)]
enum Pred {
    Class {
        negated: bool,
        items: Vec<Item>,
    },
    /// All must hold (a lookahead on the same code point, then a class).
    All(Vec<Pred>),
    /// One must hold (an alternation of single code points).
    Any(Vec<Pred>),
    Not(Box<Pred>),
}

impl Pred {
    fn matches(&self, c: Cp) -> bool {
        match self {
            Pred::Class { negated, items } => items.iter().any(|i| i.matches(c)) != *negated,
            Pred::All(ps) => ps.iter().all(|p| p.matches(c)),
            Pred::Any(ps) => ps.iter().any(|p| p.matches(c)),
            Pred::Not(p) => !p.matches(c),
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    Char(Pred),
    Seq(Vec<Node>),
    Alt(Vec<Node>),
    /// Greedy repetition of one code point: runs as a loop.
    RepeatChar {
        pred: Pred,
        min: u32,
        max: u32,
    },
    /// Greedy repetition of anything else (bounded).
    Repeat {
        node: Box<Node>,
        min: u32,
        max: u32,
    },
    Look {
        node: Box<Node>,
        negate: bool,
    },
    End,
}

/// What went wrong compiling a pattern (a bug in the pre-tokenizer table, never user input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError(pub String);

/// A compiled pattern.
#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    root: Node,
}

type Cont<'a> = &'a dyn Fn(usize) -> Option<usize>;

impl Pattern {
    pub(crate) fn new(src: &str) -> Result<Pattern, PatternError> {
        let chars: Vec<char> = src.chars().collect();
        let mut p = Parser { s: &chars, i: 0 };
        let root = p.alt()?;
        if p.i != chars.len() {
            return Err(PatternError(format!(
                "unexpected `{}` at {}",
                chars[p.i], p.i
            )));
        }
        let root = simplify(root);
        if min_len(&root) == 0 {
            return Err(PatternError("pattern can match the empty string".into()));
        }
        check_bounded(&root)?;
        Ok(Pattern { root })
    }

    /// The first match in `text[from..end]`, searching start positions left to right.
    /// Returns (start, end) code point indices.
    pub(crate) fn find(&self, text: &[Cp], from: usize, end: usize) -> Option<(usize, usize)> {
        // `X+$` (deepseek-llm's `\s+$`): the answer is the run of X at the end. Searching start
        // by start would take quadratic time on a long run followed by something else.
        if let Node::Seq(ns) = &self.root {
            if let [Node::RepeatChar {
                pred,
                min,
                max: u32::MAX,
            }, Node::End] = ns.as_slice()
            {
                let run = text
                    .get(from..end)?
                    .iter()
                    .rev()
                    .take_while(|&&c| pred.matches(c))
                    .count();
                return (run >= (*min).max(1) as usize).then_some((end - run, end));
            }
        }
        let m = Matcher { text, end };
        (from..end).find_map(|start| {
            m.node(&self.root, start, &|p| Some(p))
                .map(|stop| (start, stop))
        })
    }

    /// Splits each segment (code point index ranges) as `std::regex_iterator` would: matches and
    /// the text between them each become a segment.
    pub(crate) fn split(&self, text: &[Cp], segments: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(segments.len() * 2);
        for &(start, end) in segments {
            let mut pos = start;
            while pos < end {
                match self.find(text, pos, end) {
                    Some((s, e)) => {
                        if s > pos {
                            out.push((pos, s));
                        }
                        out.push((s, e));
                        pos = e;
                    }
                    None => {
                        out.push((pos, end));
                        break;
                    }
                }
            }
        }
        out
    }
}

struct Matcher<'t> {
    text: &'t [Cp],
    end: usize,
}

impl Matcher<'_> {
    fn at(&self, pos: usize) -> Option<Cp> {
        if pos < self.end {
            self.text.get(pos).copied()
        } else {
            None
        }
    }

    fn node(&self, node: &Node, pos: usize, k: Cont) -> Option<usize> {
        match node {
            Node::Char(pred) => match self.at(pos) {
                Some(c) if pred.matches(c) => k(pos + 1),
                _ => None,
            },
            Node::Seq(nodes) => self.seq(nodes, pos, k),
            Node::Alt(alts) => alts.iter().find_map(|a| self.node(a, pos, k)),
            Node::RepeatChar { pred, min, max } => {
                let mut n = 0u32;
                while n < *max {
                    match self.at(pos + n as usize) {
                        Some(c) if pred.matches(c) => n += 1,
                        _ => break,
                    }
                }
                if n < *min {
                    return None;
                }
                (*min..=n).rev().find_map(|count| k(pos + count as usize))
            }
            Node::Repeat { node, min, max } => self.repeat(node, *min, *max, 0, pos, k),
            Node::Look { node, negate } => {
                let found = self.node(node, pos, &|p| Some(p)).is_some();
                if found != *negate {
                    k(pos)
                } else {
                    None
                }
            }
            Node::End => {
                if pos == self.end {
                    k(pos)
                } else {
                    None
                }
            }
        }
    }

    fn seq(&self, nodes: &[Node], pos: usize, k: Cont) -> Option<usize> {
        match nodes.split_first() {
            None => k(pos),
            Some((first, rest)) => self.node(first, pos, &|p| self.seq(rest, p, k)),
        }
    }

    fn repeat(
        &self,
        node: &Node,
        min: u32,
        max: u32,
        count: u32,
        pos: usize,
        k: Cont,
    ) -> Option<usize> {
        if count < max {
            let more = self.node(node, pos, &|p| {
                if p == pos {
                    None
                } else {
                    self.repeat(node, min, max, count + 1, p, k)
                }
            });
            if more.is_some() {
                return more;
            }
        }
        if count >= min {
            k(pos)
        } else {
            None
        }
    }
}

/// Shortest number of code points `node` can match.
fn min_len(node: &Node) -> u32 {
    match node {
        Node::Char(_) => 1,
        Node::Seq(ns) => ns.iter().map(min_len).fold(0u32, u32::saturating_add),
        Node::Alt(ns) => ns.iter().map(min_len).min().unwrap_or(0),
        Node::RepeatChar { min, .. } => *min,
        Node::Repeat { node, min, .. } => min_len(node).saturating_mul(*min),
        Node::Look { .. } | Node::End => 0,
    }
}

fn check_bounded(node: &Node) -> Result<(), PatternError> {
    match node {
        Node::Char(_) | Node::RepeatChar { .. } | Node::End => Ok(()),
        Node::Seq(ns) | Node::Alt(ns) => ns.iter().try_for_each(check_bounded),
        Node::Repeat { node, max, .. } => {
            if *max > MAX_GROUP_REPEAT {
                return Err(PatternError(format!(
                    "a group that is not a single code point repeats up to {max} times \
                     (at most {MAX_GROUP_REPEAT} are supported)"
                )));
            }
            check_bounded(node)
        }
        Node::Look { node, .. } => check_bounded(node),
    }
}

/// If `node` always consumes exactly one code point, the test it applies to it.
fn as_single(node: &Node) -> Option<Pred> {
    match node {
        Node::Char(p) => Some(p.clone()),
        Node::RepeatChar {
            pred,
            min: 1,
            max: 1,
        } => Some(pred.clone()),
        Node::Alt(alts) => alts
            .iter()
            .map(as_single)
            .collect::<Option<Vec<_>>>()
            .map(Pred::Any),
        Node::Seq(ns) => {
            // Lookaheads on single code points followed by one single code point.
            let (last, looks) = ns.split_last()?;
            let mut preds = Vec::with_capacity(ns.len());
            for l in looks {
                match l {
                    Node::Look { node, negate } => {
                        let p = as_single(node)?;
                        preds.push(if *negate { Pred::Not(Box::new(p)) } else { p });
                    }
                    _ => return None,
                }
            }
            preds.push(as_single(last)?);
            Some(if preds.len() == 1 {
                preds.pop()?
            } else {
                Pred::All(preds)
            })
        }
        _ => None,
    }
}

/// Flattens one-element sequences and turns repetitions of single code points into loops.
fn simplify(node: Node) -> Node {
    match node {
        Node::Seq(ns) => {
            let mut ns: Vec<Node> = ns.into_iter().map(simplify).collect();
            if ns.len() == 1 {
                ns.pop().unwrap_or(Node::Seq(Vec::new()))
            } else {
                Node::Seq(ns)
            }
        }
        Node::Alt(ns) => {
            let mut ns: Vec<Node> = ns.into_iter().map(simplify).collect();
            if ns.len() == 1 {
                ns.pop().unwrap_or(Node::Alt(Vec::new()))
            } else {
                Node::Alt(ns)
            }
        }
        Node::Repeat { node, min, max } => {
            let inner = simplify(*node);
            match as_single(&inner) {
                Some(pred) => Node::RepeatChar { pred, min, max },
                None => Node::Repeat {
                    node: Box::new(inner),
                    min,
                    max,
                },
            }
        }
        Node::Look { node, negate } => Node::Look {
            node: Box::new(simplify(*node)),
            negate,
        },
        other => other,
    }
}

struct Parser<'s> {
    s: &'s [char],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, PatternError> {
        Err(PatternError(format!("{what} at position {}", self.i)))
    }

    fn alt(&mut self) -> Result<Node, PatternError> {
        let mut alts = vec![self.seq()?];
        while self.eat('|') {
            alts.push(self.seq()?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Node::Seq(Vec::new()))
        } else {
            Node::Alt(alts)
        })
    }

    fn seq(&mut self) -> Result<Node, PatternError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(Node::Seq(items))
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, PatternError> {
        let (min, max) = match self.peek() {
            Some('?') => (0, 1),
            Some('*') => (0, u32::MAX),
            Some('+') => (1, u32::MAX),
            Some('{') => {
                self.i += 1;
                let min = self.number()?;
                let max = if self.eat(',') {
                    if self.peek() == Some('}') {
                        u32::MAX
                    } else {
                        self.number()?
                    }
                } else {
                    min
                };
                if !self.eat('}') || max < min {
                    return self.err("bad {n,m} quantifier");
                }
                self.i -= 1; // the '}' is consumed below with the others
                (min, max)
            }
            _ => return Ok(atom),
        };
        self.i += 1;
        if self.peek() == Some('?') || self.peek() == Some('+') {
            return self.err("lazy and possessive quantifiers are not supported");
        }
        if matches!(atom, Node::Look { .. } | Node::End) {
            return self.err("quantified assertion");
        }
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    fn number(&mut self) -> Result<u32, PatternError> {
        let start = self.i;
        let mut n: u32 = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            n = match n.checked_mul(10).and_then(|n| n.checked_add(d)) {
                Some(n) => n,
                None => return self.err("number too large"),
            };
            self.i += 1;
        }
        if self.i == start {
            return self.err("expected a number");
        }
        Ok(n)
    }

    fn atom(&mut self) -> Result<Node, PatternError> {
        let Some(c) = self.peek() else {
            return self.err("unexpected end");
        };
        self.i += 1;
        match c {
            '(' => {
                let node = if self.eat('?') {
                    if self.eat(':') {
                        self.alt()?
                    } else if self.eat('=') {
                        Node::Look {
                            node: Box::new(self.alt()?),
                            negate: false,
                        }
                    } else if self.eat('!') {
                        Node::Look {
                            node: Box::new(self.alt()?),
                            negate: true,
                        }
                    } else {
                        return self.err("unsupported group kind");
                    }
                } else {
                    self.alt()?
                };
                if !self.eat(')') {
                    return self.err("missing `)`");
                }
                Ok(node)
            }
            '[' => self.class(),
            '$' => Ok(Node::End),
            '^' => self.err("`^` is not supported"),
            '.' => Ok(Node::Char(Pred::Class {
                negated: true,
                items: vec![
                    Item::Range(0x0A, 0x0A),
                    Item::Range(0x0D, 0x0D),
                    Item::Range(0x2028, 0x2029),
                ],
            })),
            '\\' => {
                let item = self.escape()?;
                Ok(Node::Char(Pred::Class {
                    negated: false,
                    items: vec![item],
                }))
            }
            '*' | '+' | '?' | '{' => self.err("quantifier without an operand"),
            c => Ok(Node::Char(Pred::Class {
                negated: false,
                items: vec![Item::Range(c as u32, c as u32)],
            })),
        }
    }

    /// After a `\`: one class item.
    fn escape(&mut self) -> Result<Item, PatternError> {
        let Some(c) = self.peek() else {
            return self.err("pattern ends with `\\`");
        };
        self.i += 1;
        let lit = |c: char| Ok(Item::Range(c as u32, c as u32));
        match c {
            's' => Ok(Item::Space),
            'S' => Ok(Item::Not(Box::new(Item::Space))),
            'd' => Ok(Item::Digit),
            'D' => Ok(Item::Not(Box::new(Item::Digit))),
            'w' => Ok(Item::Word),
            'W' => Ok(Item::Not(Box::new(Item::Word))),
            'n' => lit('\n'),
            'r' => lit('\r'),
            't' => lit('\t'),
            'v' => lit('\u{0B}'),
            'f' => lit('\u{0C}'),
            'p' => {
                if !self.eat('{') {
                    return self.err("expected `{` after `\\p`");
                }
                let start = self.i;
                while self.peek().is_some_and(|c| c != '}') {
                    self.i += 1;
                }
                let name: String = self.s[start..self.i].iter().collect();
                if !self.eat('}') {
                    return self.err("missing `}` after `\\p{`");
                }
                let mask = match name.as_str() {
                    "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => LETTER,
                    "N" => NUMBER,
                    "P" => PUNCTUATION,
                    "M" => MARK,
                    "S" => SYMBOL,
                    "Z" => SEPARATOR,
                    _ => return self.err(&format!("unsupported category \\p{{{name}}}")),
                };
                Ok(Item::Category(mask))
            }
            c if c.is_ascii_alphanumeric() => self.err(&format!("unsupported escape `\\{c}`")),
            c => lit(c),
        }
    }

    /// After a `[`.
    fn class(&mut self) -> Result<Node, PatternError> {
        let negated = self.eat('^');
        let mut items = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return self.err("missing `]`");
            };
            if c == ']' {
                self.i += 1;
                break;
            }
            self.i += 1;
            let item = if c == '\\' {
                self.escape()?
            } else {
                Item::Range(c as u32, c as u32)
            };
            // A range `a-b` (a `-` before `]` is literal).
            if let Item::Range(lo, _) = item {
                if self.peek() == Some('-') && self.s.get(self.i + 1).is_some_and(|&n| n != ']') {
                    self.i += 1;
                    let Some(hc) = self.peek() else {
                        return self.err("unfinished range");
                    };
                    self.i += 1;
                    let hi = if hc == '\\' {
                        self.escape()?
                    } else {
                        Item::Range(hc as u32, hc as u32)
                    };
                    match hi {
                        Item::Range(h, _) if h >= lo => {
                            items.push(Item::Range(lo, h));
                            continue;
                        }
                        _ => return self.err("bad range in class"),
                    }
                }
            }
            items.push(item);
        }
        Ok(Node::Char(Pred::Class { negated, items }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cps(s: &str) -> Vec<Cp> {
        s.chars().map(Cp::new).collect()
    }

    fn split(pat: &str, s: &str) -> Vec<String> {
        let p = Pattern::new(pat).unwrap();
        let t = cps(s);
        let chars: Vec<char> = s.chars().collect();
        p.split(&t, &[(0, t.len())])
            .into_iter()
            .map(|(a, b)| chars[a..b].iter().collect())
            .collect()
    }

    #[test]
    fn splits_like_regex_iterator() {
        assert_eq!(split("\\p{N}", "ab12c"), ["ab", "1", "2", "c"]);
        assert_eq!(split("[0-9][0-9][0-9]", "12345"), ["123", "45"]);
        assert_eq!(split("\\s?\\p{L}+", "hi there!"), ["hi", " there", "!"]);
        assert_eq!(split("\\s+$", "a  b  "), ["a  b", "  "]);
        assert_eq!(split("\\s+$", "  "), ["  "]);
        assert_eq!(split("\\s+$", "  x"), ["  x"]);
        assert_eq!(split("[\\r\\n]", "a\r\nb"), ["a", "\r", "\n", "b"]);
        assert_eq!(split("[一-龥]+", "ab中文c"), ["ab", "中文", "c"]);
        // Non-ASCII whitespace is only `\s`.
        assert_eq!(split("\\s+", "a\u{3000}b"), ["a", "\u{3000}", "b"]);
        assert_eq!(
            split("[^\\s\\p{L}]+", "a\u{3000}!?b"),
            ["a\u{3000}", "!?", "b"]
        );
        // Alternatives are tried in order, not longest first.
        assert_eq!(split("a|ab", "ab"), ["a", "b"]);
        // Lookaheads on one code point.
        assert_eq!(split("((?=[\\p{L}])([^a-z]))+", "abCDe"), ["ab", "CD", "e"]);
        assert_eq!(split("\\s+(?!\\S)|\\s+", "a   b"), ["a", "  ", " ", "b"]);
        assert_eq!(
            split("(IMGIMG)((A|B|C){1,4})Z", "xIMGIMGABZy"),
            ["x", "IMGIMGABZ", "y"]
        );
    }

    #[test]
    fn refuses_what_it_cannot_do_safely() {
        assert!(Pattern::new("a*").is_err());
        assert!(Pattern::new("(?=(\\d{3})+(?!\\d))").is_err());
        assert!(Pattern::new("(?:ab)+").is_err());
        assert!(Pattern::new("(?:ab){1,3}").is_ok());
        assert!(Pattern::new("\\p{Han}+").is_err());
        assert!(Pattern::new("a+?").is_err());
        assert!(Pattern::new("[a-").is_err());
        assert!(Pattern::new("(a").is_err());
    }

    #[test]
    fn long_runs_do_not_recurse() {
        let s = "a".repeat(200_000);
        assert_eq!(split("\\p{L}+", &s).len(), 1);
        let s = " ".repeat(200_000) + "x";
        assert_eq!(split("\\s+(?!\\S)|\\s+", &s).len(), 3);
        assert_eq!(split("\\s+$", &s).len(), 1);
    }
}
