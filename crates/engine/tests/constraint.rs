//! Constrained decoding over real vocabularies (SmolLM2's 49k, Qwen2.5's 151k): masks,
//! end-of-generation only when the grammar accepts, and property checks that random logits
//! sampled through `Decoding` with a constraint always give valid output.

use engine::constraint::{Constraint, ConstraintError, Grammar};
use engine::generate::{Decoding, GenerateOptions, StopReason};
use engine::sampler::SamplerConfig;
use engine::tokenizer::Tokenizer;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn load(path: std::path::PathBuf) -> Tokenizer {
    let file = gguf::GgufFile::open(path).expect("open model");
    Tokenizer::from_gguf(&file).expect("tokenizer")
}

fn smollm2() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(testutil::smollm2()))
}

fn qwen() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(testutil::qwen2_5_coder()))
}

/// A small, seedable generator for logits.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Result of sampling one output under a constraint with random logits.
struct Sampled {
    text: String,
    stop: Option<StopReason>,
    tokens: usize,
}

/// Samples with random logits (seeded) at temperature 1 through `Decoding` and `constraint`.
fn sample(tokenizer: &Tokenizer, constraint: Constraint, seed: u64, budget: usize) -> Sampled {
    let opts = GenerateOptions {
        max_tokens: budget,
        sampler: SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..SamplerConfig::default()
        },
        constraint: Some(constraint),
        ..GenerateOptions::default()
    };
    let mut d = Decoding::new(opts, &[], Instant::now());
    let mut rng = Rng(seed ^ 0x5555);
    let n = tokenizer.n_vocab();
    let mut logits = vec![0f32; n];
    let mut text = String::new();
    loop {
        for l in logits.iter_mut() {
            *l = rng.unit() * 4.0;
        }
        // Favour ending a little, as a model would, so outputs finish within the budget.
        for &e in tokenizer.eog_ids() {
            if let Some(l) = logits.get_mut(e as usize) {
                *l += 6.0;
            }
        }
        match d.choose(tokenizer, &logits) {
            Some(c) => text.push_str(&c.text),
            None => break,
        }
        if d.stop_reason().is_some() {
            break;
        }
    }
    text.push_str(&d.finish());
    assert!(d.constraint_error().is_none(), "{:?}", d.constraint_error());
    Sampled {
        text,
        stop: d.stop_reason(),
        tokens: d.tokens().len(),
    }
}

#[test]
fn build_time_of_the_token_tries() {
    for (name, tok) in [("SmolLM2", smollm2()), ("Qwen2.5", qwen())] {
        let start = Instant::now();
        let first = engine::constraint::prepare(tok).unwrap();
        let wall = start.elapsed();
        let start = Instant::now();
        let again = engine::constraint::prepare(tok).unwrap();
        assert_eq!(first, again, "the cached build is reused");
        assert!(start.elapsed() < wall, "the second call does not rebuild");
        println!(
            "{name}: {} tokens, token trie + parser factory built in {:.0} ms",
            tok.n_vocab(),
            first.as_secs_f64() * 1e3
        );
        // A clone of the tokenizer shares the cache.
        assert_eq!(
            engine::constraint::prepare(&tok.clone()).unwrap(),
            first,
            "clones share the cache"
        );
    }
}

#[test]
fn special_tokens_are_not_text_but_user_defined_ones_are() {
    let tok = qwen();
    let im_end = tok.token_id("<|im_end|>").unwrap();
    let tool_call = tok.token_id("<tool_call>").unwrap();
    assert!(tok.is_eog(im_end));
    // A regex that matches the text "<|im_end|>" cannot produce the control token; the
    // user-defined <tool_call> is its text.
    let mut c = Constraint::new(tok, &Grammar::Regex(r"<\|im_end\|>|<tool_call>x".into())).unwrap();
    let m = c.mask().unwrap();
    assert!(!m.allows(im_end));
    assert!(m.allows(tool_call));
    assert!(m.allows(tok.token_id("<").unwrap()));
    c.consume(tool_call).unwrap();
    assert!(!c.is_accepting());
    let m = c.mask().unwrap();
    assert!(!m.allows(im_end), "no end before the grammar accepts");
    c.consume(tok.token_id("x").unwrap()).unwrap();
    assert!(c.is_accepting());
    assert!(c.is_finished(), "nothing can follow");
}

#[test]
fn end_of_generation_only_when_the_grammar_accepts() {
    let tok = smollm2();
    let eog = tok.eog_ids().to_vec();
    assert!(!eog.is_empty());
    let mut c = Constraint::new(tok, &Grammar::Regex("[0-9]+".into())).unwrap();
    let m = c.mask().unwrap();
    assert!(
        eog.iter().all(|&e| !m.allows(e)),
        "empty text is not a match"
    );
    assert!(m.allows(tok.token_id("1").unwrap()));
    assert!(!m.allows(tok.token_id("a").unwrap()));
    c.consume(tok.token_id("1").unwrap()).unwrap();
    let m = c.mask().unwrap();
    assert!(
        eog.iter().all(|&e| m.allows(e)),
        "every end token once it matches"
    );
    assert!(m.allows(tok.token_id("2").unwrap()));
    assert!(!c.is_finished(), "more digits may follow");
    c.consume(eog[0]).unwrap();
    assert!(c.is_finished());
}

#[test]
fn greedy_picks_the_best_allowed_token() {
    let tok = smollm2();
    let c = Constraint::new(tok, &Grammar::Regex("(yes|no)".into())).unwrap();
    let opts = GenerateOptions {
        sampler: SamplerConfig::greedy(),
        constraint: Some(c),
        ..GenerateOptions::default()
    };
    let mut d = Decoding::new(opts, &[], Instant::now());
    let mut logits = vec![0f32; tok.n_vocab()];
    // The best token overall is not allowed; "no" is the best allowed one.
    logits[tok.token_id("maybe").unwrap() as usize] = 10.0;
    logits[tok.token_id("no").unwrap() as usize] = 5.0;
    logits[tok.token_id("yes").unwrap() as usize] = 4.0;
    let chosen = d.choose(tok, &logits).unwrap();
    assert_eq!(chosen.text, "no");
    assert!(
        !chosen.more,
        "the grammar is complete: no forward pass needed"
    );
    assert!(d.choose(tok, &logits).is_none());
    assert_eq!(d.stop_reason(), Some(StopReason::EndOfGeneration));
    assert_eq!(d.finish(), "");
}

#[test]
fn bad_grammars_are_clear_errors() {
    let tok = smollm2();
    let deep = (0..150).fold(serde_json::json!({"type": "string"}), |inner, _| {
        serde_json::json!({"type": "object", "properties": {"a": inner}, "required": ["a"]})
    });
    let cases: Vec<(Grammar, &str)> = vec![
        (Grammar::JsonSchema(deep), "nested deeper"),
        (
            Grammar::JsonSchema(serde_json::json!(false)),
            "accepts nothing",
        ),
        (Grammar::JsonSchema(serde_json::json!([1])), "JSON object"),
        (
            Grammar::JsonSchema(serde_json::json!({"type": "frobnicate"})),
            "invalid JSON schema",
        ),
        (
            Grammar::JsonSchema(serde_json::json!({"type": "string", "pattern": "(unclosed"})),
            "invalid JSON schema",
        ),
        (
            Grammar::Regex("(unclosed".into()),
            "invalid regular expression",
        ),
        (Grammar::Regex(String::new()), "empty"),
        (Grammar::Gbnf(String::new()), "line 1, column 1"),
        (
            Grammar::Gbnf("root ::= missing".into()),
            "`missing` is not defined",
        ),
        (
            Grammar::Gbnf("root ::= [^\\x00-\\U0010FFFF]".into()),
            "invalid GBNF grammar",
        ),
        (Grammar::Lark("   ".into()), "empty"),
        (
            Grammar::Lark("start: nothere".into()),
            "invalid Lark grammar",
        ),
    ];
    for (g, want) in cases {
        let start = Instant::now();
        let e = Constraint::new(tok, &g).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{g:?} took {:?}",
            start.elapsed()
        );
        let msg = e.to_string();
        assert!(msg.contains(want), "{g:?}: {msg}");
        println!("{msg}");
    }
    // Huge repetitions: bounded by llguidance's fuel and our limits; they either compile
    // quickly (the regex is lazy) or fail, never hang or take gigabytes.
    for g in [
        Grammar::Regex("a{1000000}".into()),
        Grammar::Regex("(a{1000}){1000}".into()),
        Grammar::Regex("[a-z]{100000}[0-9]{100000}".into()),
        Grammar::Gbnf("root ::= (\"a\"{10000}){10000}".into()),
        Grammar::JsonSchema(serde_json::json!({"type": "array", "minItems": 100000,
            "maxItems": 1000000, "items": {"type": "string", "minLength": 100000}})),
    ] {
        let start = Instant::now();
        let got = Constraint::new(tok, &g).map(|mut c| c.mask().map(|m| m.count()));
        let took = start.elapsed();
        println!("{g:?}: {took:?} {got:?}");
        assert!(took < Duration::from_secs(20), "{g:?} took {took:?}");
    }
    // A left-recursive grammar is fine for an Earley parser: it compiles and works.
    let g = Grammar::Gbnf("root ::= root \"a\" | \"b\"".into());
    let mut c = Constraint::new(tok, &g).unwrap();
    for t in ["b", "a", "a"] {
        assert!(c.mask().unwrap().allows(tok.token_id(t).unwrap()));
        c.consume(tok.token_id(t).unwrap()).unwrap();
    }
    assert!(c.is_accepting());
    // Matching that error type is possible.
    assert!(matches!(
        Constraint::new(tok, &Grammar::Gbnf("root ::= (".into())),
        Err(ConstraintError::Gbnf { line: 1, .. })
    ));
}
