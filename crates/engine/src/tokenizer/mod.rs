//! Tokenizers read from GGUF metadata, matching llama.cpp token for token.
//!
//! - `tokenizer.ggml.model` = "llama": SentencePiece-style merging by token score (`spm.rs`), with
//!   `<0xXX>` byte fallback and spaces written as U+2581.
//! - "gpt2": byte-level BPE by merge rank (`bpe.rs`) after a pre-tokenizer chosen by
//!   `tokenizer.ggml.pre` (`pretokenize.rs`).
//! - "gemma4": BPE over SentencePiece-style text.
//! - "bert": WordPiece (`wpm.rs`), longest pieces first after BERT's normalizer; encoding with
//!   special tokens gives `[CLS] … [SEP]`.
//!
//! Before either runs, special tokens are cut out of the text ([`Tokenizer::encode`]'s
//! `parse_special`). Which ids are BOS/EOS/end-of-generation, and the defaults when the metadata
//! is silent, follow llama.cpp's `llama_vocab`.

mod bpe;
mod pattern;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod unicode;
mod unicode_tables;
mod vocab;
mod wpm;

pub use stream::StreamDecoder;

use bpe::{ByteFallback, Merges};
use pretokenize::{PreError, PreTokenizer};
use vocab::{attr, Vocab};

/// Why a tokenizer could not be built from a file's metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    #[error("metadata key `{key}` is missing: {hint}")]
    MissingKey {
        key: &'static str,
        hint: &'static str,
    },
    #[error("metadata key `{key}` cannot be read ({source}); the file may be damaged: convert the model again")]
    BadKey {
        key: &'static str,
        #[source]
        source: gguf::GgufError,
    },
    #[error("metadata key `{key}`: {what}; the file may be damaged: convert the model again")]
    Invalid { key: &'static str, what: String },
    #[error(
        "tokenizer model \"{model}\" (metadata key `tokenizer.ggml.model`) is not supported: {why}"
    )]
    UnsupportedModel { model: String, why: &'static str },
    #[error("pre-tokenizer \"{pre}\" (metadata key `tokenizer.ggml.pre`) is not supported: {why}")]
    UnsupportedPre { pre: String, why: String },
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// Texts that mark the end of generation (llama.cpp's list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Special token ids (llama.cpp's `special_*_id`).
#[derive(Clone, Debug, Default)]
struct Specials {
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    sep: Option<u32>,
    pad: Option<u32>,
    mask: Option<u32>,
    fim_pre: Option<u32>,
    fim_suf: Option<u32>,
    fim_mid: Option<u32>,
    fim_pad: Option<u32>,
    fim_rep: Option<u32>,
    fim_sep: Option<u32>,
}

#[derive(Clone, Debug)]
enum Kind {
    Spm,
    Wpm {
        norm: wpm::Normalizer,
        /// Longest token text, in bytes.
        max_len: usize,
    },
    Bpe {
        merges: Merges,
        pre: PreTokenizer,
        /// GPT-2 byte-level text (false: SentencePiece-style raw UTF-8 with U+2581 spaces).
        byte_encode: bool,
        /// Spaces become U+2581 before pre-tokenizing (and back when decoding).
        escape_whitespaces: bool,
        ignore_merges: bool,
        /// A word made only of newlines is taken whole when it is a token (Gemma 4).
        whole_newline_runs: bool,
    },
}

/// A text <-> token id converter for one model.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    kind: Kind,
    model: String,
    pre_name: String,
    sp: Specials,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    /// End-of-generation ids, sorted.
    eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first.
    special_tokens: Vec<u32>,
    /// Finds them in text.
    special_trie: special::SpecialTrie,
    /// The token trie and parser factory of constrained decoding, built on first use.
    constraint_env: crate::constraint::EnvCache,
}

/// A piece of the text being encoded: raw text (byte range) or a special token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frag {
    Text(usize, usize),
    Token(u32),
}

fn bad(key: &'static str) -> impl FnOnce(gguf::GgufError) -> TokenizerError {
    move |source| TokenizerError::BadKey { key, source }
}

impl Tokenizer {
    /// Builds the tokenizer described by a model file's `tokenizer.*` metadata.
    pub fn from_gguf(file: &gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model = file
            .get_str(KEY_MODEL)
            .map_err(bad(KEY_MODEL))?
            .ok_or(TokenizerError::MissingKey {
                key: KEY_MODEL,
                hint: "the file carries no tokenizer; convert the model again with llama.cpp's \
                       convert_hf_to_gguf.py",
            })?
            .to_string();
        let pre_meta = file.get_str(KEY_PRE).map_err(bad(KEY_PRE))?.unwrap_or("");

        // The kind of tokenizer and llama.cpp's defaults for it.
        let mut sp = Specials::default();
        let (mut add_bos, add_eos, mut add_space_prefix, clean_spaces);
        let mut pre_name = pre_meta.to_string();
        let unsupported = |why| {
            Err(TokenizerError::UnsupportedModel {
                model: model.clone(),
                why,
            })
        };
        /// Which tokenizer family, before the vocabulary is read.
        enum Family {
            Spm,
            Wpm,
            Bpe(PreTokenizer),
        }
        let family = match model.as_str() {
            "llama" => {
                sp.bos = Some(1);
                sp.eos = Some(2);
                sp.unk = Some(0);
                add_bos = true;
                add_eos = false;
                add_space_prefix = true;
                clean_spaces = false;
                Family::Spm
            }
            "bert" => {
                sp.bos = Some(101); // [CLS]
                sp.unk = Some(100);
                sp.sep = Some(102);
                sp.pad = Some(0);
                sp.mask = Some(103);
                add_bos = true;
                add_eos = false;
                add_space_prefix = false;
                clean_spaces = true;
                Family::Wpm
            }
            "gpt2" | "gemma4" => {
                if model == "gemma4" {
                    pre_name = "gemma4".to_string();
                } else {
                    sp.bos = Some(11);
                    sp.eos = Some(11);
                }
                let pre = PreTokenizer::for_name(&pre_name).map_err(|e| {
                    let why = match e {
                        PreError::Unsupported(w) => w.to_string(),
                        PreError::Unknown => "llama.cpp does not know it either; the file may \
                                              come from a newer converter"
                            .to_string(),
                        PreError::Pattern(p) => format!("internal pattern error: {}", p.0),
                    };
                    TokenizerError::UnsupportedPre {
                        pre: pre_name.clone(),
                        why,
                    }
                })?;
                if pre.flags.no_bos {
                    sp.bos = None;
                }
                add_bos = pre.flags.add_bos;
                add_eos = false;
                add_space_prefix = false;
                clean_spaces = pre.flags.clean_spaces;
                Family::Bpe(pre)
            }
            "no_vocab" | "none" => return unsupported("the file has no vocabulary"),
            "t5" => return unsupported("Unigram (T5) tokenization is not implemented"),
            "rwkv" => return unsupported("RWKV tokenization is not implemented"),
            "plamo2" => return unsupported("PLaMo-2 tokenization is not implemented"),
            "hybriddna" | "whitespace" | "test" => {
                return unsupported("this tokenizer type is not implemented")
            }
            _ => return unsupported("llama.cpp does not know it either"),
        };
        if let Some(v) = file
            .get_bool("tokenizer.ggml.add_space_prefix")
            .map_err(bad("tokenizer.ggml.add_space_prefix"))?
        {
            add_space_prefix = v;
        }

        // Tokens, scores and types.
        let tokens = file.get_array(KEY_TOKENS).map_err(bad(KEY_TOKENS))?.ok_or(
            TokenizerError::MissingKey {
                key: KEY_TOKENS,
                hint: "the file carries no vocabulary; convert the model again",
            },
        )?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(TokenizerError::Invalid {
                key: KEY_TOKENS,
                what: format!("{n} tokens"),
            });
        }
        let total: usize = tokens
            .iter()
            .map(|v| v.as_str().map_or(0, str::len) + 16)
            .sum();
        if total > u32::MAX as usize {
            return Err(TokenizerError::Invalid {
                key: KEY_TOKENS,
                what: format!("{total} bytes of token text"),
            });
        }
        let scores = match file.get_f32_array(KEY_SCORES).map_err(bad(KEY_SCORES))? {
            Some(s) if s.len() < n => {
                return Err(TokenizerError::Invalid {
                    key: KEY_SCORES,
                    what: format!("{} scores for {n} tokens", s.len()),
                })
            }
            Some(mut s) => {
                s.truncate(n);
                s
            }
            None => vec![0.0; n],
        };
        let attrs = match file.get_i32_array(KEY_TYPES).map_err(bad(KEY_TYPES))? {
            Some(t) if t.len() < n => {
                return Err(TokenizerError::Invalid {
                    key: KEY_TYPES,
                    what: format!("{} token types for {n} tokens", t.len()),
                })
            }
            Some(t) => t[..n].iter().map(|&t| vocab::attr_from_type(t)).collect(),
            None => vec![attr::NORMAL; n],
        };
        let texts = tokens.iter().enumerate().map(|(i, v)| {
            v.as_str().ok_or_else(|| TokenizerError::Invalid {
                key: KEY_TOKENS,
                what: format!("element {i} is a {}, not a string", v.type_name()),
            })
        });
        let mut vocab = Vocab::new(texts, scores, attrs)?;

        let kind = match family {
            Family::Spm => Kind::Spm,
            Family::Wpm => {
                let flag = |key: &'static str, default: bool| {
                    file.get_bool(key)
                        .map(|v| v.unwrap_or(default))
                        .map_err(bad(key))
                };
                let lowercase = flag("tokenizer.ggml.normalizer.lowercase", true)?;
                let strip_accents = flag("tokenizer.ggml.normalizer.strip_accents", lowercase)?;
                Kind::Wpm {
                    norm: wpm::Normalizer {
                        lowercase,
                        strip_accents,
                    },
                    max_len: (0..n as u32)
                        .map(|id| vocab.text_of(id).len())
                        .max()
                        .unwrap_or(0),
                }
            }
            Family::Bpe(pre) => {
                let merges = file
                    .get_str_array(KEY_MERGES)
                    .map_err(bad(KEY_MERGES))?
                    .ok_or(TokenizerError::MissingKey {
                        key: KEY_MERGES,
                        hint: "a BPE vocabulary needs its merges; convert the model again",
                    })?;
                let merges = Merges::new(merges.into_iter(), &vocab);
                let spm_style = pre.flags.spm_style;
                Kind::Bpe {
                    merges,
                    byte_encode: !spm_style,
                    escape_whitespaces: spm_style,
                    ignore_merges: pre.flags.ignore_merges,
                    whole_newline_runs: matches!(
                        pre_name.as_str(),
                        "gemma4" | "granite-embed-multi-311m"
                    ),
                    pre,
                }
            }
        };

        // Special ids: defaults that fall outside the vocabulary are dropped, then the metadata.
        let n32 = n as u32;
        let set_special = |key: &str, slot: &mut Option<u32>| {
            if slot.is_some_and(|id| id >= n32) {
                *slot = None;
            }
            // A value that is not a small non-negative integer is ignored, like an out-of-range
            // id (llama.cpp keeps its default then).
            if let Ok(Some(id)) = file.get_u32(key) {
                if id < n32 {
                    *slot = Some(id);
                }
            }
        };
        set_special("tokenizer.ggml.bos_token_id", &mut sp.bos);
        set_special("tokenizer.ggml.eos_token_id", &mut sp.eos);
        set_special("tokenizer.ggml.eot_token_id", &mut sp.eot);
        set_special("tokenizer.ggml.eom_token_id", &mut sp.eom);
        set_special("tokenizer.ggml.unknown_token_id", &mut sp.unk);
        set_special("tokenizer.ggml.seperator_token_id", &mut sp.sep);
        set_special("tokenizer.ggml.padding_token_id", &mut sp.pad);
        set_special("tokenizer.ggml.mask_token_id", &mut sp.mask);
        set_special("tokenizer.ggml.fim_pre_token_id", &mut sp.fim_pre);
        set_special("tokenizer.ggml.fim_suf_token_id", &mut sp.fim_suf);
        set_special("tokenizer.ggml.fim_mid_token_id", &mut sp.fim_mid);
        set_special("tokenizer.ggml.fim_pad_token_id", &mut sp.fim_pad);
        set_special("tokenizer.ggml.fim_rep_token_id", &mut sp.fim_rep);
        set_special("tokenizer.ggml.fim_sep_token_id", &mut sp.fim_sep);
        // Deprecated names of the first three.
        set_special("tokenizer.ggml.prefix_token_id", &mut sp.fim_pre);
        set_special("tokenizer.ggml.suffix_token_id", &mut sp.fim_suf);
        set_special("tokenizer.ggml.middle_token_id", &mut sp.fim_mid);
        if let Some(v) = file
            .get_bool("tokenizer.ggml.add_bos_token")
            .map_err(bad("tokenizer.ggml.add_bos_token"))?
        {
            add_bos = v;
        }
        let add_eos = match file
            .get_bool("tokenizer.ggml.add_eos_token")
            .map_err(bad("tokenizer.ggml.add_eos_token"))?
        {
            Some(v) => v,
            None => add_eos,
        };
        if pre_name == "gemma4" || pre_name == "granite-embed-multi-311m" {
            add_bos = true; // llama.cpp forces this for Gemma 4
        }
        if matches!(kind, Kind::Wpm { .. }) {
            // llama.cpp frames WordPiece input as [CLS] … [SEP] whatever the flags say.
            add_bos = true;
        }

        let name = file
            .get_str("general.name")
            .ok()
            .flatten()
            .unwrap_or("")
            .to_lowercase();
        let arch = file
            .get_str("general.architecture")
            .ok()
            .flatten()
            .unwrap_or("");
        let (eog, special_tokens) = classify_specials(&mut vocab, &mut sp, &pre_name, &name, arch);
        let special_trie = special::SpecialTrie::new(
            special_tokens
                .iter()
                .map(|&id| vocab.text_of(id).as_bytes()),
        );

        Ok(Tokenizer {
            vocab,
            kind,
            model,
            pre_name,
            sp,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            eog,
            special_tokens,
            special_trie,
            constraint_env: Default::default(),
        })
    }

    /// Text -> token ids.
    ///
    /// `add_special`: prepend BOS / append EOS where the model's metadata asks for them
    /// (WordPiece: `[CLS]` and `[SEP]`, always).
    /// `parse_special`: text such as `<|im_start|>` becomes that control token; otherwise it is
    /// tokenized as plain text. User-defined tokens are always matched whole.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let frags = self.partition(text, parse_special, &[]);
        self.encode_frags(text, &frags, add_special)
    }

    /// [`Tokenizer::encode`] with special tokens parsed everywhere except in `protected`
    /// (sorted, disjoint byte ranges): a chat prompt's markup gives control tokens, while the
    /// text that came from users (see `chat::guard`) stays text however it is spelled.
    pub fn encode_protected(
        &self,
        text: &str,
        add_special: bool,
        protected: &[std::ops::Range<usize>],
    ) -> Vec<u32> {
        let frags = self.partition(text, true, protected);
        self.encode_frags(text, &frags, add_special)
    }

    /// Byte ranges of `text` that `encode(…, parse_special = true)` could turn into control or
    /// unknown tokens (overlapping occurrences merged), in order.
    pub fn control_spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
        self.special_trie
            .for_each_match(text.as_bytes(), |pos, prio| {
                if let Some(&id) = self.special_tokens.get(prio as usize) {
                    if self.vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0 {
                        spans.push(pos..pos + self.vocab.text_of(id).len());
                    }
                }
            });
        spans.sort_unstable_by_key(|r| (r.start, r.end));
        let mut merged: Vec<std::ops::Range<usize>> = Vec::with_capacity(spans.len());
        for r in spans {
            match merged.last_mut() {
                Some(last) if r.start < last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }

    fn encode_frags(&self, text: &str, frags: &[Frag], add_special: bool) -> Vec<u32> {
        let frags = frags.iter().copied();
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.sp.bos);
        }
        match &self.kind {
            Kind::Spm => {
                let mut prev_special = true;
                let mut buf = String::new();
                for f in frags {
                    match f {
                        Frag::Text(a, b) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('\u{2581}');
                            }
                            escape_spaces(&text[a..b], &mut buf);
                            spm::tokenize(&buf, &self.vocab, self.sp.unk, &mut out);
                            prev_special = false;
                        }
                        Frag::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Kind::Wpm { norm, max_len } => {
                for f in frags {
                    match f {
                        Frag::Text(a, b) => wpm::tokenize(
                            &text[a..b],
                            &self.vocab,
                            *norm,
                            *max_len,
                            self.sp.unk,
                            &mut out,
                        ),
                        Frag::Token(id) => out.push(id),
                    }
                }
            }
            Kind::Bpe {
                merges,
                pre,
                byte_encode,
                escape_whitespaces,
                ignore_merges,
                whole_newline_runs,
            } => {
                let fallback = if *byte_encode {
                    ByteFallback::Raw
                } else {
                    ByteFallback::Hex
                };
                let mut escaped = String::new();
                let mut word_buf = String::new();
                for f in frags {
                    let (a, b) = match f {
                        Frag::Token(id) => {
                            out.push(id);
                            continue;
                        }
                        Frag::Text(a, b) => (a, b),
                    };
                    let seg = if *escape_whitespaces {
                        escaped.clear();
                        escape_spaces(&text[a..b], &mut escaped);
                        escaped.as_str()
                    } else {
                        &text[a..b]
                    };
                    for (wa, wb) in pre.split(seg) {
                        let word = if *byte_encode {
                            word_buf.clear();
                            word_buf.extend(
                                seg.as_bytes()[wa..wb]
                                    .iter()
                                    .map(|&b| unicode::BYTE_TO_CHAR[usize::from(b)]),
                            );
                            word_buf.as_str()
                        } else {
                            &seg[wa..wb]
                        };
                        let whole = *ignore_merges
                            || (*whole_newline_runs && word.bytes().all(|b| b == b'\n'));
                        if whole {
                            if let Some(id) = self.vocab.get(word) {
                                out.push(id);
                                continue;
                            }
                        }
                        bpe::tokenize_word(word, &self.vocab, merges, fallback, &mut out);
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.sp.eos);
        }
        if add_special && matches!(self.kind, Kind::Wpm { .. }) {
            out.extend(self.sp.sep);
        }
        out
    }

    /// Cuts special tokens out of `text` as llama.cpp does: each special token, longest first,
    /// splits every remaining text fragment at each of its occurrences (see `special.rs`). With
    /// `parse_special` false only user-defined tokens are cut.
    fn partition(
        &self,
        text: &str,
        parse_special: bool,
        protected: &[std::ops::Range<usize>],
    ) -> Vec<Frag> {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Vec::new();
        }
        let overlaps_protected = |a: usize, b: usize| {
            // The first range ending after `a` is the only one that can overlap [a, b).
            let i = protected.partition_point(|r| r.end <= a);
            protected.get(i).is_some_and(|r| r.start < b)
        };
        let wanted = |id: u32, pos: usize| {
            self.vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) == 0
                || (parse_special && !overlaps_protected(pos, pos + self.vocab.text_of(id).len()))
        };
        // (priority, position) of every occurrence, packed for sorting.
        let mut occ: Vec<u64> = Vec::new();
        self.special_trie.for_each_match(bytes, |pos, prio| {
            if let Some(&id) = self.special_tokens.get(prio as usize) {
                if wanted(id, pos) {
                    occ.push((u64::from(prio) << 32) | pos as u64);
                }
            }
        });
        if occ.is_empty() {
            return vec![Frag::Text(0, bytes.len())];
        }
        occ.sort_unstable();

        const FREE: u8 = 0;
        const TAKEN: u8 = 1;
        const STRIPPED: u8 = 2;
        let mut state = vec![FREE; bytes.len()];
        let mut placed: Vec<(usize, u32)> = Vec::new();
        for key in occ {
            let id = self.special_tokens[(key >> 32) as usize];
            let pos = (key & 0xFFFF_FFFF) as usize;
            let end = pos + self.vocab.text_of(id).len();
            if !state[pos..end].iter().all(|&s| s == FREE) {
                continue;
            }
            state[pos..end].fill(TAKEN);
            placed.push((pos, id));
            let a = self.vocab.attr(id);
            if a & attr::LSTRIP != 0 {
                let mut j = pos;
                while j > 0 && state[j - 1] == FREE && is_c_space(bytes[j - 1]) {
                    state[j - 1] = STRIPPED;
                    j -= 1;
                }
            }
            if a & attr::RSTRIP != 0 {
                let mut j = end;
                while j < bytes.len() && state[j] == FREE && is_c_space(bytes[j]) {
                    state[j] = STRIPPED;
                    j += 1;
                }
            }
        }
        placed.sort_unstable();

        let mut frags = Vec::with_capacity(placed.len() * 2 + 1);
        let mut next = placed.iter().peekable();
        let mut i = 0;
        while i < bytes.len() {
            if let Some(&&(pos, id)) = next.peek() {
                if pos == i {
                    frags.push(Frag::Token(id));
                    i += self.vocab.text_of(id).len();
                    next.next();
                    continue;
                }
            }
            if state[i] == STRIPPED {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && state[i] == FREE {
                i += 1;
            }
            frags.push(Frag::Text(start, i));
        }
        frags
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.sp.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.sp.eos
    }

    /// The end-of-turn token (`<|im_end|>`, `<end_of_turn>`, …) when the model has one.
    pub fn eot(&self) -> Option<u32> {
        self.sp.eot
    }

    pub fn unk(&self) -> Option<u32> {
        self.sp.unk
    }

    /// The separator (`[SEP]`) that WordPiece encoding appends with the special tokens.
    pub fn sep(&self) -> Option<u32> {
        self.sp.sep
    }

    /// The fill-in-the-middle markers (prefix, suffix, middle) when the model has all three:
    /// from `tokenizer.ggml.fim_{pre,suf,mid}_token_id`, else found in the vocabulary by
    /// their usual texts (`<|fim_prefix|>`, `<fim_prefix>`, `<PRE>`, …).
    pub fn fim(&self) -> Option<(u32, u32, u32)> {
        Some((self.sp.fim_pre?, self.sp.fim_suf?, self.sp.fim_mid?))
    }

    /// Whether `encode(…, add_special = true, …)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.sp.bos.is_some()
    }

    /// Whether `encode(…, add_special = true, …)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.sp.eos.is_some()
    }

    /// Whether generating `id` ends the turn (EOS, EOT, `<|im_end|>`, `<end_of_turn>`, …).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` is the unknown token (or marked unknown in the vocabulary).
    pub fn is_unknown(&self, id: u32) -> bool {
        self.vocab.attr(id) & attr::UNKNOWN != 0
    }

    /// The cache of constrained decoding's shared state (see `constraint`).
    pub(crate) fn constraint_env(&self) -> &crate::constraint::EnvCache {
        &self.constraint_env
    }

    /// Whether `id` is a control token (rendered as "" unless asked).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id) & attr::CONTROL != 0
    }

    /// `tokenizer.ggml.model`.
    pub fn model_kind(&self) -> &str {
        &self.model
    }

    /// The pre-tokenizer in use ("" for SentencePiece and WordPiece).
    pub fn pre_tokenizer(&self) -> &str {
        match self.kind {
            Kind::Spm | Kind::Wpm { .. } => "",
            Kind::Bpe { .. } => &self.pre_name,
        }
    }

    /// The raw text of a token as stored in the vocabulary (byte-level or `▁` form).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.text(id)
    }

    /// The id of the token whose raw text is `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.get(text)
    }

    /// The bytes a token stands for: byte-level BPE decoded, `▁` turned into a space, `<0xAB>`
    /// into the byte. Control and unknown tokens give "" unless `render_special`; unused tokens
    /// and ids past the vocabulary always give "".
    pub fn token_bytes(&self, id: u32, render_special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_token_bytes(id, render_special, &mut out);
        out
    }

    fn append_token_bytes(&self, id: u32, render_special: bool, out: &mut Vec<u8>) {
        let Some(text) = self.vocab.text(id) else {
            return;
        };
        let a = self.vocab.attr(id);
        if !render_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            return;
        }
        if a & (attr::CONTROL | attr::UNKNOWN | attr::USER_DEFINED) != 0 {
            out.extend_from_slice(text.as_bytes());
        } else if a & attr::NORMAL != 0 {
            let byte_level = matches!(
                self.kind,
                Kind::Bpe {
                    byte_encode: true,
                    ..
                }
            );
            if byte_level {
                decode_byte_level(text, out);
            } else {
                unescape_spaces(text, out);
            }
        } else if a & attr::BYTE != 0 {
            // "<0xAB>"; like llama.cpp, a malformed one reads as 0.
            let hex = text.get(3..5).unwrap_or("");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
        }
    }

    /// Token ids -> text, as llama.cpp's detokenizer: the SentencePiece leading space of the
    /// first token is dropped, and for vocabularies that ask for it, tokenization spaces are
    /// cleaned up (" ," -> ","). Invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids, render_special)).into_owned()
    }

    /// [`decode`](Self::decode) without the UTF-8 conversion.
    pub fn decode_bytes(&self, ids: &[u32], render_special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut piece = Vec::new();
        let mut remove_space = self.add_space_prefix;
        for &id in ids {
            piece.clear();
            self.append_token_bytes(id, render_special, &mut piece);
            let p = match piece.split_first() {
                Some((b' ', rest)) if remove_space => rest,
                _ => &piece[..],
            };
            out.extend_from_slice(p);
            remove_space = false;
        }
        if self.clean_spaces {
            out = clean_up_spaces(&out);
        }
        out
    }
}

/// llama.cpp's load-time rules for special tokens: finds EOT/EOM/FIM tokens by text when the
/// metadata does not name them, marks them control tokens, builds the end-of-generation set and
/// the list of tokens `partition` cuts out. Returns (sorted EOG ids, special tokens longest
/// first).
fn classify_specials(
    vocab: &mut Vocab,
    sp: &mut Specials,
    pre: &str,
    name: &str,
    arch: &str,
) -> (Vec<u32>, Vec<u32>) {
    let n = vocab.len() as u32;
    // Looking texts up (rather than scanning tokens) sees, for a text shared by several tokens,
    // only the last one, as llama.cpp's text -> id map does. When several candidates exist,
    // llama.cpp takes whichever its hash map yields first; we take the first in list order,
    // which puts the specific markers ("<|eot_id|>", "<|im_end|>") before generic ones.
    let find =
        |vocab: &Vocab, texts: &[&str]| -> Option<u32> { texts.iter().find_map(|t| vocab.get(t)) };
    let mark_control = |vocab: &mut Vocab, id: u32| {
        if let Some(a) = vocab.attrs.get_mut(id as usize) {
            *a |= attr::CONTROL;
        }
    };
    for (slot, texts) in [
        (&mut sp.eot, EOT_TEXTS),
        (&mut sp.eom, EOM_TEXTS),
        (&mut sp.fim_pre, FIM_PRE_TEXTS),
        (&mut sp.fim_suf, FIM_SUF_TEXTS),
        (&mut sp.fim_mid, FIM_MID_TEXTS),
        (&mut sp.fim_pad, FIM_PAD_TEXTS),
        (&mut sp.fim_rep, FIM_REP_TEXTS),
        (&mut sp.fim_sep, FIM_SEP_TEXTS),
    ] {
        if slot.is_none() {
            if let Some(id) = find(vocab, texts) {
                *slot = Some(id);
                mark_control(vocab, id);
            }
        }
    }
    for id in 0..n {
        let a = vocab.attr(id);
        if a & attr::CONTROL != 0 && vocab.text_of(id).contains("unused") {
            vocab.attrs[id as usize] |= attr::UNUSED;
        }
    }

    let mut eog: Vec<u32> = [sp.fim_pad, sp.fim_rep, sp.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for t in EOG_TEXTS {
        if let Some(id) = vocab.get(t) {
            eog.push(id);
            mark_control(vocab, id);
        }
    }
    // gpt-oss: always rendered.
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(id) = vocab.get(t) {
            vocab.attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    eog.extend([sp.eos, sp.eot, sp.eom].into_iter().flatten());
    eog.sort_unstable();
    eog.dedup();

    // gpt-oss / solar-open: "<|end|>" ends a message, not the generation.
    let has = |eog: &[u32], vocab: &Vocab, t: &str| eog.iter().any(|&id| vocab.text_of(id) == t);
    let has_end = eog
        .iter()
        .copied()
        .find(|&id| vocab.text_of(id) == "<|end|>");
    if let Some(end) = has_end {
        let call = has(&eog, vocab, "<|call|>") || has(&eog, vocab, "<|calls|>");
        if call && (has(&eog, vocab, "<|return|>") || has(&eog, vocab, "<|flush|>")) {
            eog.retain(|&id| id != end);
            vocab.attrs[end as usize] = attr::USER_DEFINED;
        }
    }
    // Gemma 4 / PLaMo: "</s>" is an ordinary token there.
    if has(&eog, vocab, "<|tool_response>") || has(&eog, vocab, "<|plamo:eos|>") {
        if let Some(s) = eog.iter().copied().find(|&id| vocab.text_of(id) == "</s>") {
            eog.retain(|&id| id != s);
            vocab.attrs[s as usize] = attr::NORMAL;
        }
    }

    let mut special: Vec<u32> = (0..n)
        .filter(|&id| vocab.attr(id) & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
        .collect();
    special.sort_by(|&a, &b| {
        vocab
            .text_of(b)
            .len()
            .cmp(&vocab.text_of(a).len())
            .then(a.cmp(&b))
    });

    // Per-model strip rules.
    let set = |vocab: &mut Vocab, text: &str, bit: u16, on: bool| {
        if let Some(id) = vocab.get(text) {
            let a = &mut vocab.attrs[id as usize];
            *a = if on { *a | bit } else { *a & !bit };
        }
    };
    if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
        .iter()
        .any(|p| pre.contains(p))
        || ["nomic-bert-moe", "jina-bert-v3"]
            .iter()
            .any(|a| arch.contains(a))
    {
        set(vocab, "<mask>", attr::LSTRIP, true);
    } else if name.contains("phi-3") || name.contains("phi3") {
        for &id in &special {
            vocab.attrs[id as usize] |= attr::RSTRIP;
        }
        set(vocab, "</s>", attr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(vocab, t, attr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(vocab, "[MASK]", attr::LSTRIP, true);
    }
    (eog, special)
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Appends `s` with each space written as U+2581.
fn escape_spaces(s: &str, out: &mut String) {
    for (i, part) in s.split(' ').enumerate() {
        if i > 0 {
            out.push('\u{2581}');
        }
        out.push_str(part);
    }
}

/// Appends `s` with each U+2581 written as a space.
fn unescape_spaces(s: &str, out: &mut Vec<u8>) {
    for (i, part) in s.split('\u{2581}').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(part.as_bytes());
    }
}

/// Appends the bytes a GPT-2 byte-level token text stands for. A character outside the byte
/// map is written as llama.cpp does: `[UNK_BYTE_0x<hex>` + the whole text + `]`.
fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// llama.cpp's `clean_up_tokenization_spaces`: " ?", " !", " .", " ," lose the space; a lone
/// apostrophe between spaces loses both; " 's", " 'm", " 're", " 've" lose the space.
fn clean_up_spaces(text: &[u8]) -> Vec<u8> {
    // Pass 1: punctuation.
    let mut p1 = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            p1.pop();
        }
        p1.push(x);
    }
    // Pass 2: " ' " -> "'" (the removed space no longer counts as a space).
    let mut src = p1;
    let mut p2 = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        let x = src[i];
        if i > 0 && x == b'\'' && i + 1 < src.len() && src[i - 1] == b' ' && src[i + 1] == b' ' {
            p2.pop();
            src[i + 1] = 0;
            p2.push(x);
            i += 2;
            continue;
        }
        p2.push(x);
        i += 1;
    }
    // Pass 3: contractions.
    let mut p3 = Vec::with_capacity(p2.len());
    for (i, &x) in p2.iter().enumerate() {
        if i > 0 && p2[i - 1] == b' ' && x == b'\'' && i + 1 < p2.len() {
            let x1 = p2[i + 1];
            let x2 = p2.get(i + 2).copied();
            let drop = match x1 {
                b't' | b'd' => false,
                b's' | b'm' => true,
                _ => matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e'))),
            };
            if drop {
                p3.pop();
            }
        }
        p3.push(x);
    }
    p3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_spaces() {
        let c = |s: &str| String::from_utf8(clean_up_spaces(s.as_bytes())).unwrap();
        assert_eq!(c("Hello , world !"), "Hello, world!");
        assert_eq!(c("a ' b"), "a'b");
        assert_eq!(
            c("it 's I 'm we 're you 've I 'd don 't"),
            "it's I'm we're you've I 'd don 't"
        );
        assert_eq!(c(" ' ' x"), "'' x");
        assert_eq!(c(""), "");
    }

    #[test]
    fn escapes() {
        let mut s = String::new();
        escape_spaces(" a  b ", &mut s);
        assert_eq!(s, "▁a▁▁b▁");
        let mut v = Vec::new();
        unescape_spaces(&s, &mut v);
        assert_eq!(v, b" a  b ");
    }

    #[test]
    fn stream_decoder_splits_emoji() {
        let mut d = StreamDecoder::new();
        let e = "🦙".as_bytes();
        assert_eq!(d.push(&e[..1]), "");
        assert_eq!(d.push(&e[1..3]), "");
        assert!(d.has_pending());
        assert_eq!(d.push(&[e[3], b'!']), "🦙!");
        assert_eq!(d.push(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(d.push(&e[..2]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert_eq!(d.finish(), "");
    }
}
