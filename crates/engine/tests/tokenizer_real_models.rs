//! The two real models' tokenizers against llama.cpp's output on a corpus of ~360 strings.
//!
//! `tests/data/golden/tokenizer_corpus.json` holds the strings; `tokens_<model>.json` holds, per
//! string, the ids llama.cpp gives with (add_special, parse_special) = (false, false) "plain",
//! (false, true) "special" and (true, false) "bos", and for each the detokenized bytes (base64)
//! without ("d") and with ("ds") special tokens rendered. Everything must match exactly.

use std::path::Path;

use engine::tokenizer::Tokenizer;

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 character {c:?} in {s:?}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let k = chunk.len().saturating_sub(1);
        for i in 0..k {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn check_model(model: &str, path: &Path) {
    let corpus = testutil::golden("tokenizer_corpus.json");
    let golden = testutil::golden(&format!("tokens_{model}.json"));
    let strings = corpus["strings"]
        .as_array()
        .unwrap_or_else(|| panic!("corpus has no strings"));
    let entries = golden["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{model}: golden file has no entries"));
    assert_eq!(
        strings.len(),
        entries.len(),
        "{model}: corpus and golden entries differ in length"
    );

    let file = gguf::GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t0 = std::time::Instant::now();
    let tok = Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{model}: {e}"));
    println!("{model}: tokenizer built in {:?}", t0.elapsed());

    assert_eq!(
        golden["n_vocab"].as_u64(),
        Some(tok.n_vocab() as u64),
        "{model}: n_vocab"
    );
    assert_eq!(
        golden["bos_id"].as_u64(),
        tok.bos().map(u64::from),
        "{model}: bos"
    );
    assert_eq!(
        golden["eos_id"].as_u64(),
        tok.eos().map(u64::from),
        "{model}: eos"
    );
    assert_eq!(
        golden["add_bos"].as_bool(),
        Some(tok.add_bos()),
        "{model}: add_bos"
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, (s, e)) in strings.iter().zip(entries).enumerate() {
        let s = s
            .as_str()
            .unwrap_or_else(|| panic!("corpus string {i} is not a string"));
        for (mode, add_special, parse_special) in [
            ("plain", false, false),
            ("special", false, true),
            ("bos", true, false),
        ] {
            let want = &e[mode];
            let want_ids = testutil::golden_ids(&want["ids"]);
            let got = tok.encode(s, add_special, parse_special);
            checked += 1;
            if got != want_ids {
                failures.push(format!(
                    "string {i} {s:?} ({mode}):\n  expected {want_ids:?}\n  got      {got:?}"
                ));
                continue;
            }
            for (key, render) in [("d", false), ("ds", true)] {
                let want_bytes = base64_decode(want[key].as_str().unwrap_or(""));
                let got_bytes = tok.decode_bytes(&got, render);
                if got_bytes != want_bytes {
                    failures.push(format!(
                        "string {i} {s:?} ({mode}) decoded with render_special={render}:\n  expected {:?}\n  got      {:?}",
                        String::from_utf8_lossy(&want_bytes),
                        String::from_utf8_lossy(&got_bytes)
                    ));
                }
            }
        }
    }
    println!(
        "{model}: {}/{checked} encodings match",
        checked - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{model}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_model("smollm2", &testutil::smollm2());
}

#[test]
fn gemma3_matches_llama_cpp() {
    check_model("gemma3", &testutil::gemma3());
}

#[test]
fn qwen2_5_coder_matches_llama_cpp() {
    check_model("qwen2_5_coder", &testutil::qwen2_5_coder());
}

#[test]
fn smollm2_chat_markers() {
    let path = testutil::smollm2();
    let file = gguf::GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{e}"));
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>\n", false, true);
    assert_eq!(ids[0], 1);
    assert!(ids.contains(&2));
    assert!(tok.is_eog(2), "<|im_end|> ends generation");
    assert!(tok.is_eog(0), "<|endoftext|> ends generation");
    assert!(!tok.is_eog(1), "<|im_start|> does not");
    assert_eq!(tok.decode(&ids, true), "<|im_start|>user\nHi<|im_end|>\n");
    assert_eq!(tok.decode(&ids, false), "user\nHi\n");
}

#[test]
fn gemma3_chat_markers() {
    let path = testutil::gemma3();
    let file = gguf::GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{e}"));
    let eot = tok
        .token_id("<end_of_turn>")
        .unwrap_or_else(|| panic!("no <end_of_turn>"));
    let sot = tok
        .token_id("<start_of_turn>")
        .unwrap_or_else(|| panic!("no <start_of_turn>"));
    assert!(tok.is_eog(eot));
    assert!(tok.is_eog(1), "<eos> ends generation");
    assert!(!tok.is_eog(sot));
    let ids = tok.encode("<start_of_turn>user\nHi<end_of_turn>\n", true, true);
    assert_eq!(ids[..2], [2, sot]);
    assert!(ids.contains(&eot));
    assert_eq!(tok.decode(&ids, false), "user\nHi\n");
}
