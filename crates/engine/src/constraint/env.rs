//! The tokenizer as llguidance sees it: a byte trie over the vocabulary and a parser factory,
//! built once per tokenizer (a 151k vocabulary takes a while) and shared by every constraint.

use crate::tokenizer::Tokenizer;
use llguidance::ParserFactory;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

/// What every constraint over one tokenizer shares.
pub(crate) struct Shared {
    pub factory: ParserFactory,
    /// Our end-of-generation ids, sorted (llguidance's EOS stands for all of them).
    pub eog: Vec<u32>,
    /// Tokens the trie knows (ids at or past it are never allowed).
    pub n_vocab: usize,
    /// How long the build took.
    pub build_time: Duration,
}

/// A cache slot carried by [`Tokenizer`]; clones share it (the vocabulary never changes).
#[derive(Clone, Default)]
pub(crate) struct EnvCache(Arc<OnceLock<Result<Arc<Shared>, String>>>);

impl std::fmt::Debug for EnvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0.get() {
            None => "not built",
            Some(Ok(_)) => "built",
            Some(Err(_)) => "failed",
        };
        write!(f, "EnvCache({state})")
    }
}

impl EnvCache {
    /// The shared state for `tokenizer` (whose cache this is), built on first use.
    pub fn get(&self, tokenizer: &Tokenizer) -> Result<Arc<Shared>, String> {
        self.0
            .get_or_init(|| build(tokenizer).map(Arc::new))
            .clone()
    }
}

/// Limits that keep a hostile grammar from taking much time or memory while it compiles or
/// while masks are computed (llguidance's defaults allow ~500 MB of lexer states).
fn limits(l: &mut llguidance::api::ParserLimits) {
    l.max_items_in_row = 2_000;
    l.initial_lexer_fuel = 1_000_000;
    l.step_lexer_fuel = 200_000;
    l.step_max_items = 50_000;
    l.max_lexer_states = 40_000;
    l.max_grammar_size = 200_000;
    l.precompute_large_lexemes = true;
    // Errors name the problem, without the whole grammar and parser state.
    l.verbose_errors = false;
}

/// The bytes llguidance sees for each token: control, unknown and end-of-generation tokens
/// are special (0xFF, then their name: a grammar cannot produce them as text), user-defined
/// tokens (`<tool_call>`) keep their text, unused ones are empty (never allowed).
pub(crate) fn token_words(tokenizer: &Tokenizer) -> Vec<Vec<u8>> {
    (0..tokenizer.n_vocab() as u32)
        .map(|id| {
            if tokenizer.is_control(id) || tokenizer.is_unknown(id) || tokenizer.is_eog(id) {
                let name = tokenizer.token_text(id).unwrap_or("");
                let mut w = Vec::with_capacity(name.len() + 1);
                w.push(TokTrie::SPECIAL_TOKEN_MARKER);
                w.extend_from_slice(name.as_bytes());
                w
            } else {
                tokenizer.token_bytes(id, false)
            }
        })
        .collect()
}

fn build(tokenizer: &Tokenizer) -> Result<Shared, String> {
    let start = Instant::now();
    let n_vocab = tokenizer.n_vocab();
    if n_vocab == 0 || n_vocab > u32::MAX as usize / 2 {
        return Err(format!("a vocabulary of {n_vocab} tokens"));
    }
    let words = token_words(tokenizer);
    let eog: Vec<u32> = tokenizer
        .eog_ids()
        .iter()
        .copied()
        .filter(|&t| (t as usize) < n_vocab)
        .collect();
    let first_eos = eog.first().copied().or(tokenizer.eos()).unwrap_or(0);
    let info = TokRxInfo {
        vocab_size: n_vocab as u32,
        tok_eos: first_eos.min(n_vocab as u32 - 1),
        tok_bos: tokenizer.bos().filter(|&t| (t as usize) < n_vocab),
        tok_pad: None,
        tok_unk: tokenizer.unk().filter(|&t| (t as usize) < n_vocab),
        tok_end_of_turn: tokenizer.eot().filter(|&t| (t as usize) < n_vocab),
    };
    // toktrie asserts its invariants; a vocabulary that breaks them is an error, not a panic.
    let trie = std::panic::catch_unwind(|| {
        let trie = TokTrie::from(&info, &words);
        if eog.is_empty() {
            trie
        } else {
            trie.with_eos_tokens(&eog)
        }
    })
    .map_err(|_| "the vocabulary cannot be put in a token trie".to_string())?;
    let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
    factory.quiet();
    limits(factory.limits_mut());
    Ok(Shared {
        factory,
        eog,
        n_vocab,
        build_time: start.elapsed(),
    })
}
