//! Token texts, scores and attributes, with a text -> id lookup.
//!
//! All token texts live in one string and the lookup is an open-addressing table of ids, so
//! loading a 262k-token vocabulary costs a handful of allocations.

/// Token attributes (llama.cpp's `llama_token_attr` bits).
pub(crate) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

/// The attribute a `tokenizer.ggml.token_type` value stands for.
pub(crate) fn attr_from_type(t: i32) -> u16 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0, // undefined
    }
}

const EMPTY: u64 = u64::MAX;

#[derive(Clone, Debug)]
pub(crate) struct Vocab {
    text: String,
    spans: Vec<(u32, u32)>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u16>,
    /// Open-addressing slots: the high 32 bits of the text's hash, then the id; `EMPTY` if free.
    table: Vec<u64>,
    mask: usize,
}

/// A fast, non-cryptographic hash of a byte string (token texts are not attacker-chosen keys in
/// any way that matters: the vocabulary is fixed when the table is built).
pub(crate) fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    // Murmur3's finalizer: every input bit reaches the low bits used for the slot.
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h
}

impl Vocab {
    /// Builds the vocabulary. An empty text becomes `[EMPTY_<id>]` (as llama.cpp does); when
    /// two tokens share a text, the lookup finds the later one.
    pub(crate) fn new<'a, E>(
        texts: impl ExactSizeIterator<Item = Result<&'a str, E>>,
        scores: Vec<f32>,
        attrs: Vec<u16>,
    ) -> Result<Vocab, E> {
        let n = texts.len();
        let mut text = String::with_capacity(n * 8);
        let mut spans = Vec::with_capacity(n);
        for (i, t) in texts.enumerate() {
            let t = t?;
            let start = text.len() as u32;
            if t.is_empty() {
                text.push_str(&format!("[EMPTY_{i}]"));
            } else {
                text.push_str(t);
            }
            spans.push((start, text.len() as u32));
        }
        let cap = (n * 2).next_power_of_two().max(16);
        let mut v = Vocab {
            text,
            spans,
            scores,
            attrs,
            table: vec![EMPTY; cap],
            mask: cap - 1,
        };
        // Inserting in slot order keeps the table writes (nearly) sequential, which matters for
        // large vocabularies; equal slots keep id order, so a later duplicate still wins.
        let hashes: Vec<u64> = (0..n as u32)
            .map(|id| hash_bytes(v.text_of(id).as_bytes()))
            .collect();
        let mut order: Vec<u64> = hashes
            .iter()
            .zip(0u64..)
            .map(|(&h, id)| ((h & v.mask as u64) << 32) | id)
            .collect();
        order.sort_unstable();
        for key in order {
            let id = key as u32;
            v.insert(id, hashes[id as usize]);
        }
        Ok(v)
    }

    fn insert(&mut self, id: u32, h: u64) {
        let tag = h >> 32;
        let mut slot = h as usize & self.mask;
        loop {
            let cur = self.table[slot];
            if cur == EMPTY
                || (cur >> 32 == tag
                    && self.text_of(cur as u32).as_bytes() == self.text_of(id).as_bytes())
            {
                self.table[slot] = (tag << 32) | u64::from(id);
                return;
            }
            slot = (slot + 1) & self.mask;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The text of a token known to exist.
    pub(crate) fn text_of(&self, id: u32) -> &str {
        match self.spans.get(id as usize) {
            Some(&(a, b)) => self.text.get(a as usize..b as usize).unwrap_or(""),
            None => "",
        }
    }

    pub(crate) fn text(&self, id: u32) -> Option<&str> {
        let &(a, b) = self.spans.get(id as usize)?;
        self.text.get(a as usize..b as usize)
    }

    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        self.get_bytes(s.as_bytes())
    }

    pub(crate) fn get_bytes(&self, s: &[u8]) -> Option<u32> {
        let h = hash_bytes(s);
        let tag = h >> 32;
        let mut slot = h as usize & self.mask;
        loop {
            let cur = *self.table.get(slot)?;
            if cur == EMPTY {
                return None;
            }
            if cur >> 32 == tag && self.text_of(cur as u32).as_bytes() == s {
                return Some(cur as u32);
            }
            slot = (slot + 1) & self.mask;
        }
    }

    pub(crate) fn attr(&self, id: u32) -> u16 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup() {
        let texts = ["a", "", "abc", "a b", "a"];
        let v = Vocab::new(
            texts.iter().map(|&t| Ok::<_, ()>(t)),
            vec![0.0; 5],
            vec![attr::NORMAL; 5],
        )
        .unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v.get("a"), Some(4));
        assert_eq!(v.get("abc"), Some(2));
        assert_eq!(v.get("[EMPTY_1]"), Some(1));
        assert_eq!(v.get(""), None);
        assert_eq!(v.get("zz"), None);
        assert_eq!(v.text(3), Some("a b"));
        assert_eq!(v.text(9), None);
    }
}
