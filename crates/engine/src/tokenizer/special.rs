//! Finding special tokens in text.
//!
//! llama.cpp cuts special tokens out of the text one token at a time, longest first: each token
//! splits every remaining text fragment at each of its (non-overlapping, leftmost-first)
//! occurrences. Doing that literally costs a substring search per special token — slow for
//! Gemma's 6k control tokens. Here one pass over the text with a trie finds every occurrence of
//! every special token; the occurrences are then taken in (priority, position) order, and one is
//! kept when none of its bytes were taken before. That gives the same fragments: an occurrence
//! llama.cpp would find lies inside one fragment (all its bytes still free) and is the leftmost
//! such after the previous match of the same token.

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    byte: u8,
    /// First child, next sibling (left-child right-sibling tree).
    child: u32,
    sibling: u32,
    /// Priority of the token ending here (`NONE` if none); more in `SpecialTrie::extra`.
    token: u32,
    has_extra: bool,
}

/// A byte trie over the texts of the special tokens.
#[derive(Clone, Debug)]
pub(crate) struct SpecialTrie {
    root: Vec<u32>,
    nodes: Vec<Node>,
    /// (node, priority) for tokens that share a text with an earlier one.
    extra: Vec<(u32, u32)>,
}

impl SpecialTrie {
    /// `texts[i]` is the text of the token with priority `i`.
    pub(crate) fn new<'a>(texts: impl Iterator<Item = &'a [u8]>) -> SpecialTrie {
        let mut t = SpecialTrie {
            root: vec![NONE; 256],
            nodes: Vec::new(),
            extra: Vec::new(),
        };
        for (prio, text) in texts.enumerate() {
            let Some((&first, rest)) = text.split_first() else {
                continue;
            };
            let mut node = t.root[usize::from(first)];
            if node == NONE {
                node = t.push(first);
                t.root[usize::from(first)] = node;
            }
            for &b in rest {
                node = t.child(node, b);
            }
            let n = &mut t.nodes[node as usize];
            if n.token == NONE {
                n.token = prio as u32;
            } else {
                n.has_extra = true;
                t.extra.push((node, prio as u32));
            }
        }
        t
    }

    fn push(&mut self, byte: u8) -> u32 {
        self.nodes.push(Node {
            byte,
            child: NONE,
            sibling: NONE,
            token: NONE,
            has_extra: false,
        });
        (self.nodes.len() - 1) as u32
    }

    /// The child of `node` for `byte`, created if missing.
    fn child(&mut self, node: u32, byte: u8) -> u32 {
        let mut c = self.nodes[node as usize].child;
        while c != NONE {
            if self.nodes[c as usize].byte == byte {
                return c;
            }
            c = self.nodes[c as usize].sibling;
        }
        let new = self.push(byte);
        self.nodes[new as usize].sibling = self.nodes[node as usize].child;
        self.nodes[node as usize].child = new;
        new
    }

    fn find_child(&self, node: u32, byte: u8) -> u32 {
        let mut c = self.nodes[node as usize].child;
        while c != NONE {
            let n = &self.nodes[c as usize];
            if n.byte == byte {
                return c;
            }
            c = n.sibling;
        }
        NONE
    }

    /// Calls `f(position, priority)` for every occurrence of every token in `text`.
    pub(crate) fn for_each_match(&self, text: &[u8], mut f: impl FnMut(usize, u32)) {
        for start in 0..text.len() {
            let mut node = self.root[usize::from(text[start])];
            let mut i = start + 1;
            while node != NONE {
                let n = &self.nodes[node as usize];
                if n.token != NONE {
                    f(start, n.token);
                    if n.has_extra {
                        for &(_, p) in self.extra.iter().filter(|&&(x, _)| x == node) {
                            f(start, p);
                        }
                    }
                }
                match text.get(i) {
                    Some(&b) => node = self.find_child(node, b),
                    None => break,
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_all_occurrences() {
        let texts: [&[u8]; 4] = [b"<ab>", b"<a", b"b", b"<a"];
        let t = SpecialTrie::new(texts.into_iter());
        let mut got = Vec::new();
        t.for_each_match(b"x<ab><a", |p, k| got.push((p, k)));
        got.sort();
        assert_eq!(got, [(1, 0), (1, 1), (1, 3), (3, 2), (5, 1), (5, 3)]);
    }
}
