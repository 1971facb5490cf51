//! llama.cpp's tokenizer test vectors: every `ggml-vocab-*.gguf` with a `.inp`/`.out` pair.
//!
//! `.inp` holds test strings separated by a `\n__ggml_vocab_test__\n` line; `.out` holds, one line
//! per string, the ids llama.cpp's `test-tokenizer-0` expects from tokenizing it with
//! `add_special = false, parse_special = false`. Every vocabulary in the directory must be listed
//! below as claimed (all strings must match) or unsupported (with the reason), so a new file is
//! never ignored silently.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use engine::tokenizer::{Tokenizer, TokenizerError};

/// Vocabularies (file name between `ggml-vocab-` and `.gguf`) whose test strings must all
/// tokenize exactly as llama.cpp does, with the tokenizer and pre-tokenizer they exercise.
const CLAIMED: &[(&str, &str)] = &[
    ("bert-bge", "bert (WordPiece, lowercased, accents stripped)"),
    ("command-r", "gpt2 / command-r (digits, then GPT-2 scanner)"),
    ("deepseek-coder", "gpt2 / deepseek-coder (regex steps)"),
    ("deepseek-llm", "gpt2 / deepseek-llm (regex steps)"),
    ("falcon", "gpt2 / falcon"),
    ("gemma-4", "gemma4 (SentencePiece-style BPE)"),
    ("gpt-2", "gpt2 / gpt-2"),
    (
        "llama-bpe",
        "gpt2 / llama-bpe (Llama 3 scanner, ignore_merges)",
    ),
    ("llama-spm", "llama (SentencePiece)"),
    ("mpt", "gpt2 / mpt (user-defined whitespace tokens)"),
    ("phi-3", "llama (SentencePiece, user-defined </s>)"),
    ("qwen2", "gpt2 / qwen2"),
    ("qwen35", "gpt2 / qwen35 (letters with marks)"),
    ("refact", "gpt2 / refact"),
    ("starcoder", "gpt2 / starcoder"),
];

/// Vocabularies with test vectors that hearth does not tokenize, and why.
const UNSUPPORTED: &[(&str, &str)] = &[];

/// Vocabularies without test vectors: they must still load (or be refused with a clear error).
const LOAD_ONLY: &[(&str, bool)] = &[
    ("aquila", true),   // gpt2 without a pre-tokenizer name: llama.cpp's "default"
    ("baichuan", true), // llama (SentencePiece)
    ("gpt-neox", true), // gpt2 without a pre-tokenizer name
    ("nomic-bert-moe", false), // t5 (Unigram): not supported
];

/// Vocabularies whose tokens do not give back the text: WordPiece lowercases, strips accents,
/// drops control characters and joins words with single spaces.
const LOSSY: &[&str] = &["bert-bge"];

/// Test strings whose decoded ids are not the input in llama.cpp either: vocabularies that clean
/// up tokenization spaces turn " ?" into "?" (llama.cpp's detokenizer does the same).
const CLEANS_SPACES: &[&str] = &[
    "falcon",
    "gemma-4",
    "gpt-2",
    "llama-bpe",
    "mpt",
    "refact",
    "starcoder",
];

fn vocab_dir() -> PathBuf {
    testutil::llama_vocab_dir()
}

fn vocab_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("ggml-vocab-{name}.gguf"))
}

/// Reads the (input, expected ids) pairs of a vocabulary, as llama.cpp's test does.
fn read_cases(dir: &Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let base = vocab_path(dir, name);
    let inp_path = PathBuf::from(format!("{}.inp", base.display()));
    let out_path = PathBuf::from(format!("{}.out", base.display()));
    let raw = fs::read_to_string(&inp_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", inp_path.display()));
    let out = fs::read_to_string(&out_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", out_path.display()));
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(sep) {
            Some(i) => {
                inputs.push(raw[pos..pos + i].to_string());
                pos += i + sep.len();
            }
            None => {
                inputs.push(raw[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| {
                    t.parse()
                        .unwrap_or_else(|e| panic!("{name}.out: bad id {t:?}: {e}"))
                })
                .collect()
        })
        .collect();
    assert!(
        outputs.len() >= inputs.len() && !inputs.is_empty(),
        "{name}: {} inputs but {} output lines",
        inputs.len(),
        outputs.len()
    );
    inputs.into_iter().zip(outputs).collect()
}

/// Loads a vocabulary; successes are shared between the tests of this file.
fn load(dir: &Path, name: &str) -> Result<Arc<Tokenizer>, TokenizerError> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Tokenizer>>>> = OnceLock::new();
    let path = vocab_path(dir, name);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&path) {
        return Ok(Arc::clone(t));
    }
    let file =
        gguf::GgufFile::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let tok = Arc::new(Tokenizer::from_gguf(&file)?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path, Arc::clone(&tok));
    Ok(tok)
}

/// Names of the vocabularies in the directory, and which of them have test vectors.
fn listing(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut all = BTreeSet::new();
    let mut with_tests = BTreeSet::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for e in entries {
        let e = e.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = f.strip_prefix("ggml-vocab-") else {
            continue;
        };
        if let Some(name) = rest.strip_suffix(".gguf") {
            all.insert(name.to_string());
        } else if let Some(name) = rest.strip_suffix(".gguf.inp") {
            with_tests.insert(name.to_string());
        }
    }
    (all, with_tests)
}

#[test]
fn every_vocabulary_is_accounted_for() {
    let dir = vocab_dir();
    let (all, with_tests) = listing(&dir);
    let claimed: BTreeSet<String> = CLAIMED.iter().map(|(n, _)| n.to_string()).collect();
    let unsupported: BTreeSet<String> = UNSUPPORTED.iter().map(|(n, _)| n.to_string()).collect();
    let load_only: BTreeSet<String> = LOAD_ONLY.iter().map(|(n, _)| n.to_string()).collect();
    for name in &with_tests {
        assert!(
            claimed.contains(name) || unsupported.contains(name),
            "{name} has test vectors but is neither claimed nor listed as unsupported"
        );
    }
    for name in &all {
        assert!(
            with_tests.contains(name) || load_only.contains(name),
            "{name} is not listed in LOAD_ONLY"
        );
    }
    for name in claimed.iter().chain(&unsupported) {
        assert!(
            with_tests.contains(name),
            "{name} is listed but has no test vectors in {}",
            dir.display()
        );
    }
}

#[test]
fn claimed_vocabularies_match_llama_cpp() {
    let dir = vocab_dir();
    let mut failures = Vec::new();
    for (name, what) in CLAIMED {
        let tok = load(&dir, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let cases = read_cases(&dir, name);
        let mut pass = 0;
        for (i, (input, expected)) in cases.iter().enumerate() {
            let got = tok.encode(input, false, false);
            if &got == expected {
                pass += 1;
            } else {
                failures.push(format!(
                    "{name} case {i} {input:?}:\n  expected {expected:?}\n  got      {got:?}"
                ));
            }
        }
        println!("{name:>16}: {pass}/{} ({what})", cases.len());
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decoding_round_trips_as_in_llama_cpp() {
    let dir = vocab_dir();
    let mut failures = Vec::new();
    for (name, _) in CLAIMED.iter().filter(|(n, _)| !LOSSY.contains(n)) {
        let tok = load(&dir, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, (input, ids)) in read_cases(&dir, name).iter().enumerate() {
            let expected = if CLEANS_SPACES.contains(name) {
                input.replace(" ?", "?")
            } else {
                input.clone()
            };
            for render_special in [false, true] {
                let got = tok.decode(ids, render_special);
                if got != expected {
                    failures.push(format!(
                        "{name} case {i} (render_special={render_special}):\n  expected {expected:?}\n  got      {got:?}"
                    ));
                }
            }
            // Concatenated token bytes are the input before any clean-up, except for
            // SentencePiece's leading space.
            let mut bytes = Vec::new();
            for &id in ids {
                bytes.extend(tok.token_bytes(id, false));
            }
            let raw = String::from_utf8_lossy(&bytes);
            let raw = if tok.model_kind() == "llama" {
                raw.strip_prefix(' ').unwrap_or(&raw).to_string()
            } else {
                raw.into_owned()
            };
            if &raw != input {
                failures.push(format!(
                    "{name} case {i}: token bytes give {raw:?}, not {input:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn unsupported_vocabularies_are_refused_with_a_reason() {
    let dir = vocab_dir();
    for (name, why) in UNSUPPORTED {
        match load(&dir, name) {
            Err(e @ TokenizerError::UnsupportedModel { .. }) => {
                println!("{name}: refused ({why}): {e}");
            }
            Err(e) => panic!("{name}: refused for the wrong reason: {e}"),
            Ok(_) => panic!("{name} is listed as unsupported ({why}) but loads"),
        }
    }
    for (name, loads) in LOAD_ONLY {
        match (load(&dir, name), loads) {
            (Ok(t), true) => {
                assert!(t.n_vocab() > 1000, "{name}");
                let ids = t.encode("Hello world", false, false);
                assert!(!ids.is_empty(), "{name}");
                assert_eq!(t.decode(&ids, false).trim_start(), "Hello world", "{name}");
            }
            (Err(e), false) => println!("{name}: refused: {e}"),
            (Ok(_), false) => panic!("{name} should be refused"),
            (Err(e), true) => panic!("{name} should load: {e}"),
        }
    }
}

#[test]
fn special_tokens_and_end_of_generation() {
    let dir = vocab_dir();
    // SentencePiece: BOS added by default, "<s>" and "</s>" parse only with parse_special.
    let spm = load(&dir, "llama-spm").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (spm.bos(), spm.eos(), spm.add_bos()),
        (Some(1), Some(2), true)
    );
    assert_eq!(spm.encode("Hello", true, false)[0], 1);
    let plain = spm.encode("</s>x", false, false);
    assert!(!plain.contains(&2), "{plain:?}");
    let parsed = spm.encode("</s>x", false, true);
    assert_eq!(parsed[0], 2, "{parsed:?}");
    assert!(spm.is_eog(2));
    assert!(!spm.is_eog(1));
    assert_eq!(spm.decode(&[1, 15043], false), " Hello");
    assert_eq!(spm.decode(&[15043], false), "Hello");
    assert_eq!(spm.decode(&[1, 15043], true), "<s> Hello");

    // Llama 3 BPE: <|eot_id|> is end-of-generation and parses as one token.
    let l3 = load(&dir, "llama-bpe").unwrap_or_else(|e| panic!("{e}"));
    let eot = l3
        .token_id("<|eot_id|>")
        .unwrap_or_else(|| panic!("no <|eot_id|>"));
    assert!(l3.is_eog(eot));
    assert!(l3.add_bos());
    let ids = l3.encode("hi<|eot_id|>", true, true);
    assert_eq!(ids.first().copied(), l3.bos());
    assert_eq!(ids.last().copied(), Some(eot));
    assert_eq!(l3.decode(&ids, true), "<|begin_of_text|>hi<|eot_id|>");
    assert_eq!(l3.decode(&ids, false), "hi");
    let no_parse = l3.encode("hi<|eot_id|>", false, false);
    assert!(!no_parse.contains(&eot));
    assert_eq!(l3.decode(&no_parse, false), "hi<|eot_id|>");

    // Qwen 2: <|im_end|> ends generation, <|im_start|> does not.
    let q = load(&dir, "qwen2").unwrap_or_else(|e| panic!("{e}"));
    let im_end = q
        .token_id("<|im_end|>")
        .unwrap_or_else(|| panic!("no <|im_end|>"));
    let im_start = q
        .token_id("<|im_start|>")
        .unwrap_or_else(|| panic!("no <|im_start|>"));
    assert!(q.is_eog(im_end));
    assert!(!q.is_eog(im_start));
    assert!(!q.add_bos());
    let ids = q.encode("<|im_start|>user\nhi<|im_end|>", true, true);
    assert_eq!(ids.first(), Some(&im_start));
    assert_eq!(ids.last(), Some(&im_end));

    // WordPiece: the special tokens frame the text as [CLS] … [SEP]; "[SEP]" in the text is
    // that token only with parse_special.
    let bert = load(&dir, "bert-bge").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (bert.bos(), bert.sep(), bert.unk()),
        (Some(101), Some(102), Some(100))
    );
    assert!(bert.add_bos());
    assert_eq!(
        bert.encode("Hello world", true, false),
        [101, 7592, 2088, 102]
    );
    assert_eq!(bert.encode("Hello world", false, false), [7592, 2088]);
    assert_eq!(bert.encode("a[SEP]b", false, true), [1037, 102, 1038]);
    assert_ne!(bert.encode("a[SEP]b", false, false), [1037, 102, 1038]);
    assert_eq!(bert.decode(&[101, 7592, 2088, 102], false), " hello world");

    // Out-of-range ids decode to nothing instead of failing.
    assert!(q.token_bytes(u32::MAX, true).is_empty());
    assert_eq!(q.decode(&[u32::MAX, im_start], false), "");
}

#[test]
fn streaming_byte_level_tokens_keeps_characters_whole() {
    let dir = vocab_dir();
    for name in ["gpt-2", "llama-bpe", "llama-spm", "gemma-4"] {
        let tok = load(&dir, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = "🦙 llama 😶‍🌫️ (emoji) 中文 Ελληνικά";
        let ids = tok.encode(text, false, false);
        let mut d = engine::tokenizer::StreamDecoder::new();
        let mut out = String::new();
        let mut split = 0;
        for &id in &ids {
            let bytes = tok.token_bytes(id, false);
            let piece = d.push(&bytes);
            if piece.is_empty() && !bytes.is_empty() {
                split += 1; // this token ended inside a character
            }
            out += &piece;
        }
        out += &d.finish();
        let expected = if tok.model_kind() == "llama" {
            format!(" {text}")
        } else {
            text.to_string()
        };
        assert_eq!(out, expected, "{name}");
        assert!(
            split > 0,
            "{name}: no token ended inside a character; the test needs one"
        );
    }
}
