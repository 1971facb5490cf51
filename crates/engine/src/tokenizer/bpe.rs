//! Byte-pair encoding by merge rank (`tokenizer.ggml.model` = "gpt2" and "gemma4").
//!
//! A word starts as one symbol per character; the adjacent pair with the lowest merge rank (the
//! leftmost among equals) merges, and so on until no pair has a rank. Each symbol left becomes
//! its token, or, when its text is not a token, one token per byte.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::vocab::Vocab;

const NONE: u32 = u32::MAX;

/// Hasher for the packed (left id, right id) keys.
#[derive(Default)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

type PairMap = HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>;

fn pair(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// Merge ranks from `tokenizer.ggml.merges`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Merges {
    /// (left id, right id) -> (rank, id of the merged text or NONE).
    by_id: PairMap,
    /// For merges with a side that is not a token: merged text -> [(left length, rank)].
    by_text: HashMap<Box<str>, Vec<(u32, u32)>>,
}

impl Merges {
    /// Reads merges ("left right", rank = position). The first of two identical merges wins.
    pub(crate) fn new<'a>(merges: impl ExactSizeIterator<Item = &'a str>, vocab: &Vocab) -> Merges {
        let mut by_id = PairMap::with_capacity_and_hasher(merges.len(), Default::default());
        let mut by_text: HashMap<Box<str>, Vec<(u32, u32)>> = HashMap::new();
        let mut buf = String::new();
        for (rank, m) in merges.enumerate() {
            let rank = rank as u32;
            // The separator is the first space after the first byte.
            let Some(sp) = m.as_bytes().iter().skip(1).position(|&b| b == b' ') else {
                continue;
            };
            let sp = sp + 1;
            let (Some(left), Some(right)) = (m.get(..sp), m.get(sp + 1..)) else {
                continue;
            };
            if left.is_empty() || right.is_empty() {
                continue;
            }
            match (vocab.get(left), vocab.get(right)) {
                (Some(l), Some(r)) => {
                    by_id.entry(pair(l, r)).or_insert_with(|| {
                        buf.clear();
                        buf.push_str(left);
                        buf.push_str(right);
                        (rank, vocab.get(&buf).unwrap_or(NONE))
                    });
                }
                _ => {
                    buf.clear();
                    buf.push_str(left);
                    buf.push_str(right);
                    let e = by_text.entry(buf.as_str().into()).or_default();
                    let ll = left.len() as u32;
                    if !e.iter().any(|&(l, _)| l == ll) {
                        e.push((ll, rank));
                    }
                }
            }
        }
        Merges { by_id, by_text }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len() + self.by_text.values().map(Vec::len).sum::<usize>()
    }

    /// Rank and merged id for adjacent symbols `a` (text `word[a_start..mid]`, id `a_id`) and `b`.
    fn find(&self, word: &str, a: &Sym, b: &Sym, vocab: &Vocab) -> Option<(u32, u32)> {
        if a.id != NONE && b.id != NONE {
            if let Some(&found) = self.by_id.get(&pair(a.id, b.id)) {
                return Some(found);
            }
        }
        if self.by_text.is_empty() {
            return None;
        }
        let start = a.start as usize;
        let end = (b.start + b.len) as usize;
        let text = word.get(start..end)?;
        let list = self.by_text.get(text)?;
        let &(_, rank) = list.iter().find(|&&(l, _)| l == a.len)?;
        Some((rank, vocab.get(text).unwrap_or(NONE)))
    }
}

#[derive(Clone, Copy, Debug)]
struct Sym {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
    id: u32,
}

/// How symbols that are not tokens fall back to bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteFallback {
    /// GPT-2 byte-level text: each byte of the symbol as a one-byte token if there is one.
    Raw,
    /// SentencePiece-style: each byte as its `<0xXX>` token if there is one.
    Hex,
}

/// A possible merge: (rank, left symbol, right symbol, left length, right length, merged id).
/// The heap pops the smallest rank first, then the leftmost.
type Candidate = (u32, u32, u32, u32, u32, u32);

/// Merges one word and appends its tokens.
pub(crate) fn tokenize_word(
    word: &str,
    vocab: &Vocab,
    merges: &Merges,
    fallback: ByteFallback,
    out: &mut Vec<u32>,
) {
    let mut syms: Vec<Sym> = Vec::with_capacity(word.len());
    for (i, c) in word.char_indices() {
        let len = c.len_utf8();
        let n = syms.len() as u32;
        syms.push(Sym {
            start: i as u32,
            len: len as u32,
            prev: n.wrapping_sub(1),
            next: if i + len == word.len() { NONE } else { n + 1 },
            id: vocab.get(&word[i..i + len]).unwrap_or(NONE),
        });
    }
    if syms.is_empty() {
        return;
    }

    let mut heap: BinaryHeap<Reverse<Candidate>> = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: u32, r: u32| {
        if l == NONE || r == NONE {
            return;
        }
        let (a, b) = (&syms[l as usize], &syms[r as usize]);
        if let Some((rank, merged)) = merges.find(word, a, b, vocab) {
            heap.push(Reverse((rank, l, r, a.len, b.len, merged)));
        }
    };
    for i in 1..syms.len() as u32 {
        push(&mut heap, &syms, i - 1, i);
    }
    while let Some(Reverse((_, l, r, llen, rlen, merged))) = heap.pop() {
        let (a, b) = (syms[l as usize], syms[r as usize]);
        if a.len == 0 || b.len == 0 || a.len != llen || b.len != rlen {
            continue; // stale
        }
        syms[l as usize].len += b.len;
        syms[l as usize].id = merged;
        syms[l as usize].next = b.next;
        syms[r as usize].len = 0;
        if b.next != NONE {
            syms[b.next as usize].prev = l;
        }
        push(&mut heap, &syms, a.prev, l);
        push(&mut heap, &syms, l, b.next);
    }

    let mut i = 0u32;
    while i != NONE {
        let s = syms[i as usize];
        if s.id != NONE {
            out.push(s.id);
        } else {
            let bytes = &word.as_bytes()[s.start as usize..(s.start + s.len) as usize];
            push_bytes(bytes, vocab, fallback, out);
        }
        i = s.next;
    }
}

/// Appends the byte tokens for `bytes`, skipping bytes without one (as llama.cpp does).
pub(crate) fn push_bytes(bytes: &[u8], vocab: &Vocab, fallback: ByteFallback, out: &mut Vec<u32>) {
    for &b in bytes {
        let id = match fallback {
            ByteFallback::Raw => vocab.get_bytes(&[b]),
            ByteFallback::Hex => vocab.get_bytes(&hex_byte(b)),
        };
        if let Some(id) = id {
            out.push(id);
        }
    }
}

/// `<0xAB>` for byte 0xAB.
pub(crate) fn hex_byte(b: u8) -> [u8; 6] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [
        b'<',
        b'0',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 15)],
        b'>',
    ]
}

#[cfg(test)]
mod tests {
    use super::super::vocab::attr;
    use super::*;

    fn vocab(texts: &[&str]) -> Vocab {
        Vocab::new(
            texts.iter().map(|&t| Ok::<_, ()>(t)),
            vec![0.0; texts.len()],
            vec![attr::NORMAL; texts.len()],
        )
        .unwrap()
    }

    #[test]
    fn merges_by_rank() {
        let v = vocab(&["a", "b", "c", "ab", "bc", "abc", "x"]);
        let m = Merges::new(["b c", "a b", "a bc", "ab c"].into_iter(), &v);
        let mut out = Vec::new();
        tokenize_word("abc", &v, &m, ByteFallback::Raw, &mut out);
        // "b c" ranks first, then "a bc".
        assert_eq!(out, [5]);
        out.clear();
        tokenize_word("abx?", &v, &m, ByteFallback::Raw, &mut out);
        assert_eq!(out, [3, 6]); // '?' has no token: dropped
    }

    #[test]
    fn merges_through_non_tokens() {
        // "q" is not a token but "q r" still merges into "qr".
        let v = vocab(&["r", "qr", "<0x71>"]);
        let m = Merges::new(["q r"].into_iter(), &v);
        assert_eq!(m.len(), 1);
        let mut out = Vec::new();
        tokenize_word("qr", &v, &m, ByteFallback::Hex, &mut out);
        assert_eq!(out, [1]);
        out.clear();
        tokenize_word("q", &v, &m, ByteFallback::Hex, &mut out);
        assert_eq!(out, [2]);
    }
}
