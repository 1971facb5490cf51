//! Tokenizers built from tiny synthetic GGUF files: the mechanics (merging, byte fallback,
//! special tokens, streaming) and every refusal, without any downloaded file.

use engine::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
use gguf::{GgufFile, GgufWriter};

fn file(w: &GgufWriter) -> GgufFile {
    GgufFile::from_bytes(w.to_bytes()).unwrap_or_else(|e| panic!("synthetic file: {e}"))
}

/// A small SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces.
fn spm_writer() -> GgufWriter {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<i32> = vec![2, 3, 3];
    let mut scores: Vec<f32> = vec![0.0; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("▁h", -3.0),
        ("ll", -3.0),
        ("▁he", -4.0),
        ("llo", -4.0),
        ("▁hello", -5.0),
        ("▁w", -6.0),
        ("<|user|>", 0.0),
    ] {
        tokens.push(t.into());
        types.push(if t == "<|user|>" { 4 } else { 1 });
        scores.push(s);
    }
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama")
        .add("tokenizer.ggml.model", "llama")
        .add("tokenizer.ggml.tokens", tokens)
        .add("tokenizer.ggml.scores", scores)
        .add("tokenizer.ggml.token_type", types);
    w
}

/// GPT-2's byte -> character map (printable Latin-1 maps to itself, the rest to U+0100..).
fn byte_char(b: u8) -> char {
    let keep = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if keep(u32::from(b)) {
        return char::from(b);
    }
    let n = (0..u32::from(b)).filter(|&x| !keep(x)).count() as u32;
    char::from_u32(256 + n).unwrap_or('?')
}

/// A small byte-level BPE vocabulary: the 256 byte characters, a few merges, two specials.
fn bpe_writer() -> GgufWriter {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "r l", "Ġwo rl", "Ġworl d",
    ];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<|endoftext|>".into());
    tokens.push("<|im_start|>".into());
    let n = tokens.len();
    let mut types = vec![1i32; n];
    types[n - 2] = 3;
    types[n - 1] = 3;
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama")
        .add("tokenizer.ggml.model", "gpt2")
        .add("tokenizer.ggml.pre", "gpt-2")
        .add("tokenizer.ggml.tokens", tokens)
        .add("tokenizer.ggml.token_type", types)
        .add("tokenizer.ggml.merges", merges.to_vec())
        .add("tokenizer.ggml.bos_token_id", (n - 2) as u32)
        .add("tokenizer.ggml.eos_token_id", (n - 2) as u32);
    w
}

#[test]
fn sentencepiece_merges_by_score_with_byte_fallback() {
    let tok = Tokenizer::from_gguf(&file(&spm_writer())).unwrap_or_else(|e| panic!("{e}"));
    let id = |t: &str| tok.token_id(t).unwrap_or_else(|| panic!("no token {t:?}"));
    assert_eq!(tok.n_vocab(), 3 + 256 + 12);
    assert_eq!(
        (tok.bos(), tok.eos(), tok.add_bos()),
        (Some(1), Some(2), true)
    );

    // A leading space is added, and "▁hello" wins.
    assert_eq!(tok.encode("hello", true, false), [1, id("▁hello")]);
    assert_eq!(tok.encode("hello", false, false), [id("▁hello")]);
    // 'é' has no piece: its two UTF-8 bytes.
    assert_eq!(
        tok.encode("hé", false, false),
        [id("▁h"), id("<0xC3>"), id("<0xA9>")]
    );
    // User-defined tokens are cut out even without parse_special; control tokens only with it.
    assert_eq!(
        tok.encode("<|user|>hello", false, false),
        [id("<|user|>"), id("▁hello")]
    );
    assert!(!tok.encode("</s>", false, false).contains(&2));
    assert_eq!(tok.encode("</s>", false, true), [2]);

    // Decoding: the leading space of the first piece goes, byte tokens join up.
    let ids = tok.encode("hello hé", true, false);
    assert_eq!(tok.decode(&ids, false), " hello hé");
    assert_eq!(tok.decode(&ids[1..], false), "hello hé");
    assert_eq!(tok.decode(&ids, true), "<s> hello hé");
    assert_eq!(tok.token_bytes(id("<0xC3>"), false), [0xC3]);
    assert_eq!(tok.token_bytes(id("▁hello"), false), b" hello");
    assert_eq!(tok.token_bytes(2, false), b"");
    assert_eq!(tok.token_bytes(2, true), b"</s>");
    assert_eq!(tok.token_text(id("▁w")), Some("▁w"));
    assert!(tok.is_eog(2));
    assert!(!tok.is_eog(1));

    // Streaming: the split character comes out whole, once both bytes are in.
    let mut d = StreamDecoder::new();
    let mut out = String::new();
    let mut held = false;
    for &i in &ids[1..] {
        let piece = d.push(&tok.token_bytes(i, false));
        held |= piece.is_empty();
        out += &piece;
    }
    out += &d.finish();
    assert!(held, "the first byte of 'é' should have been held back");
    assert_eq!(out, " hello hé");
}

#[test]
fn byte_level_bpe_merges_by_rank() {
    let tok = Tokenizer::from_gguf(&file(&bpe_writer())).unwrap_or_else(|e| panic!("{e}"));
    let id = |t: &str| tok.token_id(t).unwrap_or_else(|| panic!("no token {t:?}"));
    assert!(!tok.add_bos());
    assert_eq!(
        tok.encode("hello world", false, false),
        [id("hello"), id("Ġworld")]
    );
    // Bytes without merges stay single byte tokens.
    let ids = tok.encode("hé!", false, false);
    assert_eq!(ids, [id("h"), id("Ã"), id("©"), id("!")]);
    assert_eq!(tok.decode(&ids, false), "hé!");
    // Control tokens only with parse_special; they end generation when they are EOS.
    let eot = id("<|endoftext|>");
    assert_eq!(
        tok.encode("hello<|endoftext|>", false, true),
        [id("hello"), eot]
    );
    assert!(!tok
        .encode("hello<|endoftext|>", false, false)
        .contains(&eot));
    assert!(tok.is_eog(eot));
    assert!(!tok.is_eog(id("<|im_start|>")));
    assert_eq!(tok.decode(&[id("hello"), eot], false), "hello");
    assert_eq!(tok.decode(&[id("hello"), eot], true), "hello<|endoftext|>");
    // GPT-2 cleans up tokenization spaces when decoding.
    let ids = tok.encode("hello , world !", false, false);
    assert_eq!(tok.decode(&ids, false), "hello, world!");
}

#[test]
fn stream_decoder_never_splits_a_character() {
    let text = "🦙 llama 😶‍🌫️ ok 中文";
    let bytes = text.as_bytes();
    // Feed one byte at a time: every piece is whole characters.
    let mut d = StreamDecoder::new();
    let mut out = String::new();
    for b in bytes {
        out += &d.push(std::slice::from_ref(b));
    }
    out += &d.finish();
    assert_eq!(out, text);
    // Invalid bytes come out as U+FFFD, and an unfinished character at the end too.
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(b"a\xFFb"), "a\u{FFFD}b");
    assert_eq!(d.push(&"🦙".as_bytes()[..3]), "");
    assert_eq!(d.finish(), "\u{FFFD}");
}

fn expect_err(w: &GgufWriter, check: impl Fn(&TokenizerError) -> bool, key: &str) {
    match Tokenizer::from_gguf(&file(w)) {
        Ok(_) => panic!("expected an error about `{key}`"),
        Err(e) => {
            assert!(check(&e), "wrong error: {e:?}");
            assert!(
                e.to_string().contains(key),
                "message does not name `{key}`: {e}"
            );
        }
    }
}

#[test]
fn refusals_name_the_key() {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama");
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::MissingKey { .. }),
        "tokenizer.ggml.model",
    );

    let mut w = spm_writer();
    w.add("tokenizer.ggml.model", "t5");
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::UnsupportedModel { .. }),
        "tokenizer.ggml.model",
    );

    let mut w = spm_writer();
    w.add("tokenizer.ggml.model", 7u32);
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::BadKey { .. }),
        "tokenizer.ggml.model",
    );

    let mut w = spm_writer();
    w.add("tokenizer.ggml.tokens", vec![1u32, 2, 3]);
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::Invalid { .. }),
        "tokenizer.ggml.tokens",
    );

    let mut w = spm_writer();
    w.add("tokenizer.ggml.tokens", Vec::<String>::new());
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::Invalid { .. }),
        "tokenizer.ggml.tokens",
    );

    let mut w = spm_writer();
    w.add("tokenizer.ggml.scores", vec![0.0f32; 3]);
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::Invalid { .. }),
        "tokenizer.ggml.scores",
    );

    let mut w = spm_writer();
    w.add("tokenizer.ggml.token_type", vec![1i32; 3]);
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::Invalid { .. }),
        "tokenizer.ggml.token_type",
    );

    let mut w = bpe_writer();
    w.add("tokenizer.ggml.pre", "no-such-pre");
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::UnsupportedPre { .. }),
        "tokenizer.ggml.pre",
    );

    let mut w = bpe_writer();
    w.add("tokenizer.ggml.pre", "kimi-k2");
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::UnsupportedPre { .. }),
        "tokenizer.ggml.pre",
    );

    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", "gpt2")
        .add("tokenizer.ggml.tokens", vec!["a", "b"]);
    expect_err(
        &w,
        |e| matches!(e, TokenizerError::MissingKey { .. }),
        "tokenizer.ggml.merges",
    );
}

#[test]
fn metadata_overrides_and_bad_special_ids() {
    // An out-of-range BOS id keeps the default; add_bos_token=false turns BOS off.
    let mut w = spm_writer();
    w.add("tokenizer.ggml.bos_token_id", 1_000_000u32)
        .add("tokenizer.ggml.add_bos_token", false)
        .add("tokenizer.ggml.add_space_prefix", false);
    let tok = Tokenizer::from_gguf(&file(&w)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tok.bos(), Some(1));
    assert!(!tok.add_bos());
    let h = tok.token_id("h").unwrap_or_else(|| panic!("no h"));
    assert_eq!(tok.encode("hello", true, false)[0], h);

    // An explicit EOT id joins the end-of-generation set.
    let mut w = spm_writer();
    w.add("tokenizer.ggml.eot_token_id", 5u32);
    let tok = Tokenizer::from_gguf(&file(&w)).unwrap_or_else(|e| panic!("{e}"));
    assert!(tok.is_eog(5));
    assert_eq!(tok.eot(), Some(5));
}
