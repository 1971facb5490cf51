//! WordPiece tokenization (`tokenizer.ggml.model` = "bert"), as llama.cpp's WPM tokenizer.
//!
//! The text is normalized and split into words first (BERT's basic tokenizer): whitespace ends a
//! word; NUL, U+FFFD and control characters vanish; with `strip_accents`, each code point becomes
//! the first code point of its canonical decomposition and combining marks vanish; with
//! `lowercase`, letters are lowercased; punctuation, ASCII symbols and CJK ideographs each make a
//! word of their own. Each word then becomes the longest vocabulary pieces from left to right,
//! the first carrying U+2581 in front (GGUF converters write word-initial pieces that way and
//! `##` continuation pieces bare). A word with any part that matches no piece becomes `[UNK]`.

use super::unicode::{self, CONTROL, MARK, PUNCTUATION, SYMBOL};
use super::vocab::Vocab;

/// BERT's normalizer options (`tokenizer.ggml.normalizer.*`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Normalizer {
    pub lowercase: bool,
    pub strip_accents: bool,
}

/// Tokenizes `text` and appends the ids. `max_len` is the longest token text in bytes.
pub(crate) fn tokenize(
    text: &str,
    vocab: &Vocab,
    norm: Normalizer,
    max_len: usize,
    unk: Option<u32>,
    out: &mut Vec<u32>,
) {
    let mut word = String::from('\u{2581}');
    for c in text.chars() {
        let cp = if norm.strip_accents {
            unicode::nfd_first(u32::from(c))
        } else {
            u32::from(c)
        };
        if unicode::is_whitespace(cp) {
            finish_word(&mut word, vocab, max_len, unk, out);
            continue;
        }
        let cat = unicode::category(cp);
        if cp == 0 || cp == 0xFFFD || cat == CONTROL || (norm.strip_accents && cat == MARK) {
            continue;
        }
        let shown = if norm.lowercase {
            unicode::to_lower(cp)
        } else {
            cp
        };
        let Some(shown) = char::from_u32(shown) else {
            continue;
        };
        if cat == PUNCTUATION || (cp < 0x7F && cat == SYMBOL) || is_cjk(cp) {
            finish_word(&mut word, vocab, max_len, unk, out);
            word.push(shown);
            finish_word(&mut word, vocab, max_len, unk, out);
        } else {
            word.push(shown);
        }
    }
    finish_word(&mut word, vocab, max_len, unk, out);
}

/// Tokenizes the word in `word` (after its U+2581) and leaves `word` as U+2581 alone.
fn finish_word(
    word: &mut String,
    vocab: &Vocab,
    max_len: usize,
    unk: Option<u32>,
    out: &mut Vec<u32>,
) {
    const PREFIX: usize = '\u{2581}'.len_utf8();
    if word.len() > PREFIX {
        split_word(word.as_bytes(), vocab, max_len, unk, out);
        word.truncate(PREFIX);
    }
}

/// Greedy longest-match from the left over a word (with its U+2581 prefix). Token texts are
/// whole UTF-8 strings, so every match starts and ends on a character boundary.
fn split_word(w: &[u8], vocab: &Vocab, max_len: usize, unk: Option<u32>, out: &mut Vec<u32>) {
    let start = out.len();
    let mut i = 0;
    while i < w.len() {
        let longest = (i + 1..=w.len().min(i + max_len))
            .rev()
            .find_map(|j| vocab.get_bytes(&w[i..j]).map(|id| (j, id)));
        match longest {
            Some((j, id)) => {
                out.push(id);
                i = j;
            }
            None => {
                out.truncate(start);
                out.extend(unk);
                return;
            }
        }
    }
}

/// CJK ideographs, which BERT splits one by one (the ranges of Hugging Face's tokenizer,
/// including its 0x2B920 where the Unicode block starts at 0x2B820).
fn is_cjk(cp: u32) -> bool {
    matches!(
        cp,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
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
    fn words_pieces_and_unknowns() {
        let v = vocab(&[
            "[UNK]", "▁hello", "▁play", "ing", "▁!", "▁apfel", "▁中", "▁a", "b",
        ]);
        let max = v.text_of(1).len();
        let norm = Normalizer {
            lowercase: true,
            strip_accents: true,
        };
        let run = |s: &str| {
            let mut out = Vec::new();
            tokenize(s, &v, norm, max, Some(0), &mut out);
            out
        };
        assert_eq!(run("Hello playing!"), [1, 2, 3, 4]);
        assert_eq!(run("  \tÄPFEL\u{0}  "), [5]);
        assert_eq!(run("中中"), [6, 6]);
        assert_eq!(run("abx hello"), [0, 1]); // no piece for "x": the whole word is unknown
        assert_eq!(run("ab"), [7, 8]);
        assert_eq!(run(""), [0u32; 0]);
        let keep = Normalizer {
            lowercase: false,
            strip_accents: false,
        };
        let mut out = Vec::new();
        tokenize("Hello hello", &v, keep, max, Some(0), &mut out);
        assert_eq!(out, [0, 1]);
    }
}
