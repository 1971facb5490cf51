//! Text at the token limit: a character whose bytes the limit cuts is dropped, not shown as
//! U+FFFD (real SmolLM2 tokenizer, byte-level BPE, so "€" can come as three byte tokens).

use engine::generate::{Decoding, GenerateOptions, StopReason};
use engine::sampler::SamplerConfig;
use engine::tokenizer::Tokenizer;
use std::time::Instant;

fn smollm2() -> Tokenizer {
    let path = testutil::smollm2();
    let file = gguf::GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{e}"))
}

/// Greedy decoding of `script` (one token per step) with `max_tokens`; returns what was
/// released while choosing, what `finish` gave, and why it stopped.
fn decode(tok: &Tokenizer, script: &[u32], max_tokens: usize) -> (String, String, StopReason) {
    let opts = GenerateOptions {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ..GenerateOptions::default()
    };
    let mut d = Decoding::new(opts, &[], Instant::now());
    let mut shown = String::new();
    for &t in script {
        let mut logits = vec![0.0f32; tok.n_vocab()];
        logits[t as usize] = 10.0;
        match d.choose(tok, &logits) {
            Some(c) => shown.push_str(&c.text),
            None => break,
        }
    }
    if d.stop_reason().is_none() {
        // The last token asked for no forward pass: the caller ends it (as the server does).
        d.stop(StopReason::MaxTokens);
    }
    let rest = d.finish();
    (shown, rest, d.stop_reason().expect("stopped"))
}

#[test]
fn a_character_cut_by_the_token_limit_is_dropped() {
    let tok = smollm2();
    // "€" is E2 82 AC; byte-level BPE has a token for each byte.
    let byte = |b: u8| {
        (0..tok.n_vocab() as u32)
            .find(|&id| tok.token_bytes(id, false) == [b])
            .unwrap_or_else(|| panic!("no byte token for {b:#x}"))
    };
    let a = tok.encode("a", false, false)[0];
    let euro = [byte(0xE2), byte(0x82), byte(0xAC)];
    assert_eq!(tok.decode(&euro, false), "€");

    // Cut after two of the three bytes: the "a" and nothing else.
    let (shown, rest, why) = decode(&tok, &[a, euro[0], euro[1], euro[2]], 3);
    assert_eq!(why, StopReason::MaxTokens);
    assert_eq!(shown, "a");
    assert_eq!(rest, "", "the cut character is not shown as U+FFFD");

    // With room for it, the whole character.
    let (shown, rest, _) = decode(&tok, &[a, euro[0], euro[1], euro[2]], 4);
    assert_eq!(format!("{shown}{rest}"), "a€");
}
