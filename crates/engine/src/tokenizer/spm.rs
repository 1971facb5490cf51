//! SentencePiece-style tokenization by token score (`tokenizer.ggml.model` = "llama").
//!
//! The text (spaces already turned into U+2581) starts as one symbol per character; the adjacent
//! pair whose concatenation is the token with the highest score (the leftmost among equals)
//! merges, until no adjacent pair forms a token. A symbol left that is not a token becomes its
//! bytes as `<0xXX>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::bpe::hex_byte;
use super::vocab::Vocab;

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Sym {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Debug)]
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Higher score first; among equal scores, the leftmost first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Tokenizes `text` (already escaped) and appends the ids. `unk` stands for a byte that has no
/// token at all (llama.cpp would fail there).
pub(crate) fn tokenize(text: &str, vocab: &Vocab, unk: Option<u32>, out: &mut Vec<u32>) {
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        let len = c.len_utf8();
        let n = syms.len() as u32;
        syms.push(Sym {
            start: i as u32,
            len: len as u32,
            prev: n.wrapping_sub(1),
            next: if i + len == text.len() { NONE } else { n + 1 },
        });
    }
    if syms.is_empty() {
        return;
    }
    let bytes = text.as_bytes();

    let mut heap: BinaryHeap<Bigram> = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: u32, r: u32| {
        if l == NONE || r == NONE {
            return;
        }
        let a = &syms[l as usize];
        let size = a.len + syms[r as usize].len;
        let Some(piece) = bytes.get(a.start as usize..(a.start + size) as usize) else {
            return;
        };
        if let Some(id) = vocab.get_bytes(piece) {
            heap.push(Bigram {
                score: vocab.score(id),
                left: l,
                right: r,
                size,
            });
        }
    };
    for i in 1..syms.len() as u32 {
        push(&mut heap, &syms, i - 1, i);
    }
    while let Some(bg) = heap.pop() {
        let (a, b) = (syms[bg.left as usize], syms[bg.right as usize]);
        if a.len == 0 || b.len == 0 || a.len + b.len != bg.size {
            continue; // stale
        }
        syms[bg.left as usize].len += b.len;
        syms[bg.left as usize].next = b.next;
        syms[bg.right as usize].len = 0;
        if b.next != NONE {
            syms[b.next as usize].prev = bg.left;
        }
        push(&mut heap, &syms, a.prev, bg.left);
        push(&mut heap, &syms, bg.left, b.next);
    }

    let mut i = 0u32;
    while i != NONE {
        let s = syms[i as usize];
        let piece = &bytes[s.start as usize..(s.start + s.len) as usize];
        match vocab.get_bytes(piece) {
            Some(id) => out.push(id),
            None => {
                for &b in piece {
                    let id = vocab
                        .get_bytes(&hex_byte(b))
                        .or_else(|| vocab.get_bytes(&[b]))
                        .or(unk);
                    if let Some(id) = id {
                        out.push(id);
                    }
                }
            }
        }
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::super::vocab::attr;
    use super::*;

    #[test]
    fn best_score_wins() {
        let texts = ["a", "b", "c", "ab", "bc", "<0x7A>"];
        let scores = vec![0.0, 0.0, 0.0, -1.0, -0.5, 0.0];
        let v = Vocab::new(
            texts.iter().map(|&t| Ok::<_, ()>(t)),
            scores,
            vec![attr::NORMAL; 6],
        )
        .unwrap();
        let mut out = Vec::new();
        tokenize("abc", &v, None, &mut out);
        assert_eq!(out, [0, 4]); // "bc" scores higher than "ab"
        out.clear();
        tokenize("abz", &v, None, &mut out);
        assert_eq!(out, [3, 5]); // z -> <0x7A>
    }
}
