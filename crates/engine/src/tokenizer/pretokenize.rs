//! Pre-tokenizers: how byte-level BPE vocabularies cut text into words before merging.
//!
//! A pre-tokenizer is a list of steps; each step cuts every piece left by the previous step
//! further (what a step matches becomes a piece, and so does the text between matches). The table
//! [`PreTokenizer::for_name`] is keyed by `tokenizer.ggml.pre` and follows llama.cpp: the same
//! patterns, and for the common GPT-2, Llama 3 and Qwen 2 patterns, hand-written scanners that cut
//! exactly as llama.cpp's own scanners do (they differ from a regex engine in a few corners).

use super::pattern::{Cp, Pattern, PatternError};
use super::unicode::{LETTER, MARK, NUMBER, WHITESPACE};

/// A hand-written scanner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scanner {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// As `Llama3` with `\p{N}` instead of `\p{N}{1,3}`.
    Qwen2,
    /// As `Qwen2`, with combining marks (`\p{M}`) counted with letters.
    Qwen35,
    /// `[^\n]+|[\n]+`
    Newlines,
}

#[derive(Clone, Copy, Debug)]
enum StepSpec {
    Scan(Scanner),
    Regex(&'static str),
}

#[derive(Clone, Debug)]
enum Step {
    Scan(Scanner),
    Pattern(Pattern),
}

/// What a `tokenizer.ggml.pre` name means besides its patterns (llama.cpp's per-type settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PreFlags {
    /// Undo tokenization spaces (" ," -> ",") when decoding.
    pub clean_spaces: bool,
    /// A word that is a whole token is taken as is, without merging.
    pub ignore_merges: bool,
    /// Add BOS by default (the metadata can still say otherwise).
    pub add_bos: bool,
    /// Text is SentencePiece-style (spaces as U+2581, raw UTF-8, `<0xXX>` byte tokens) rather
    /// than GPT-2 byte-level.
    pub spm_style: bool,
    /// The type has no BOS token by default.
    pub no_bos: bool,
}

const DEFAULT_FLAGS: PreFlags = PreFlags {
    clean_spaces: true,
    ignore_merges: false,
    add_bos: false,
    spm_style: false,
    no_bos: false,
};

/// A compiled pre-tokenizer.
#[derive(Clone, Debug)]
pub(crate) struct PreTokenizer {
    steps: Vec<Step>,
    pub flags: PreFlags,
}

/// Why a `tokenizer.ggml.pre` name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PreError {
    /// llama.cpp knows the name but it needs a scanner hearth does not have.
    Unsupported(&'static str),
    /// Not a name llama.cpp knows.
    Unknown,
    /// A table pattern failed to compile (a bug).
    Pattern(PatternError),
}

const GPT2_STYLE: &[StepSpec] = &[StepSpec::Scan(Scanner::Gpt2)];
const LLAMA3_STYLE: &[StepSpec] = &[StepSpec::Scan(Scanner::Llama3)];
const QWEN2_STYLE: &[StepSpec] = &[StepSpec::Scan(Scanner::Qwen2)];
const STARCODER_STYLE: &[StepSpec] = &[StepSpec::Regex("\\p{N}"), StepSpec::Scan(Scanner::Gpt2)];
const NEWLINES_ONLY: &[StepSpec] = &[StepSpec::Scan(Scanner::Newlines)];
const BLOOM_STYLE: &str = " ?[^(\\s|.,!?…。，、।۔،)]+";
const DEEPSEEK3_STYLE: &[StepSpec] = &[
    StepSpec::Regex("\\p{N}{1,3}"),
    StepSpec::Regex("[一-龥぀-ゟ゠-ヿ]+"),
    StepSpec::Regex(
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    ),
];
const GPT4O_PATTERN: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const BAILING_PATTERN: &str = "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";

/// The patterns and settings for a `tokenizer.ggml.pre` name (`None` or "" means llama.cpp's
/// fallback, "default").
fn table(name: &str) -> Result<(&'static [StepSpec], PreFlags), PreError> {
    let f = DEFAULT_FLAGS;
    let no_clean = PreFlags {
        clean_spaces: false,
        ..f
    };
    Ok(match name {
        "" | "default" => (
            &[
                StepSpec::Regex("[\\p{P}\\$\\+<=>\\^~\\|]+"),
                StepSpec::Scan(Scanner::Gpt2),
                StepSpec::Regex("\\p{N}+"),
                StepSpec::Regex("[0-9][0-9][0-9]"),
            ],
            f,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => (
            LLAMA3_STYLE,
            PreFlags {
                ignore_merges: true,
                add_bos: true,
                ..f
            },
        ),
        "dbrx" | "smaug-bpe" => (LLAMA3_STYLE, f),
        "chatglm-bpe" => (LLAMA3_STYLE, PreFlags { no_bos: true, ..f }),
        "glm4" | "glm5" => (
            LLAMA3_STYLE,
            PreFlags {
                no_bos: true,
                ignore_merges: true,
                ..f
            },
        ),
        "jais-2" => (
            &[StepSpec::Regex(
                "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
            )],
            f,
        ),
        "deepseek-llm" => (
            &[
                StepSpec::Regex("[\r\n]"),
                StepSpec::Regex(
                    "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\
                     \u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\
                     \u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}\
                     -\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\
                     \u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}\
                     -\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\
                     \u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\
                     \u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\
                     \u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}\
                     -\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\
                     \u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\
                     \u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\
                     \u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}\
                     -\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\
                     \u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}\
                     -\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}\
                     -\u{118DF}\u{1E900}-\u{1E943}]+"),
                StepSpec::Regex("\\s?[!-/:-~！-／：-～‘-‟　-。]+"),
                StepSpec::Regex("\\s+$"),
                StepSpec::Regex("[一-龥ࠀ-一가-퟿]+"),
                StepSpec::Regex("\\p{N}+"),
            ],
            no_clean,
        ),
        "deepseek-coder" => (
            &[
                StepSpec::Regex("[\r\n]"),
                StepSpec::Regex("\\s?\\p{L}+"),
                StepSpec::Regex("\\s?\\p{P}+"),
                StepSpec::Regex("[一-龥ࠀ-一가-퟿]+"),
                StepSpec::Regex("\\p{N}"),
            ],
            no_clean,
        ),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => (DEEPSEEK3_STYLE, no_clean),
        "spark2_5" => (
            &[
                StepSpec::Regex("\\p{N}{1,3}"),
                StepSpec::Regex("[一-龥぀-ゟ゠-ヿ]+"),
                StepSpec::Regex(
                    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
                ),
                StepSpec::Regex("\\p{N}"),
            ],
            no_clean,
        ),
        "youtu" => (
            &[
                StepSpec::Regex("[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+"),
                StepSpec::Regex(
                    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
                ),
            ],
            PreFlags {
                ignore_merges: true,
                ..no_clean
            },
        ),
        "falcon" => (
            &[
                StepSpec::Regex("[\\p{P}\\$\\+<=>\\^~\\|`]+"),
                StepSpec::Scan(Scanner::Gpt2),
                StepSpec::Regex("[0-9][0-9][0-9]"),
            ],
            f,
        ),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            (STARCODER_STYLE, f)
        }
        "command-r" | "smollm" => (STARCODER_STYLE, no_clean),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais" | "exaone4"
        | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => (GPT2_STYLE, f),
        "trillion" | "granite-docling" => (GPT2_STYLE, no_clean),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
        | "grok-2" => (QWEN2_STYLE, no_clean),
        "megrez" | "stablelm2" => (QWEN2_STYLE, f),
        "qwen35" => (&[StepSpec::Scan(Scanner::Qwen35)], no_clean),
        "poro-chat" => (&[StepSpec::Regex(BLOOM_STYLE)], no_clean),
        "bloom" | "gpt3-finnish" => (&[StepSpec::Regex(BLOOM_STYLE)], f),
        "viking" => (
            &[StepSpec::Regex(BLOOM_STYLE), StepSpec::Regex("\\p{N}")],
            no_clean,
        ),
        "tekken" => (
            &[StepSpec::Regex(
                "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
            )],
            PreFlags {
                ignore_merges: true,
                add_bos: true,
                ..no_clean
            },
        ),
        "chameleon" => (
            &[
                StepSpec::Regex("<sentinel:[0-9]+>"),
                StepSpec::Regex("(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z"),
                StepSpec::Regex("([\\t\\n]|    |  )"),
                StepSpec::Regex("\\p{N}"),
                StepSpec::Regex("[\\p{P}!-/:-@\\[-`{-~]"),
                StepSpec::Scan(Scanner::Gpt2),
            ],
            PreFlags {
                add_bos: true,
                ..no_clean
            },
        ),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => {
            (&[StepSpec::Regex(GPT4O_PATTERN)], no_clean)
        }
        "granite-embed-multi-97m" => (
            &[StepSpec::Regex(
                "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
            )],
            PreFlags {
                ignore_merges: true,
                ..no_clean
            },
        ),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => {
            (&[StepSpec::Regex(BAILING_PATTERN)], no_clean)
        }
        "seed-coder" => (
            &[StepSpec::Regex(
                "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
            )],
            no_clean,
        ),
        "ufakzeka" => (
            &[StepSpec::Regex(
                "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
            )],
            no_clean,
        ),
        "laguna" => (
            &[
                StepSpec::Scan(Scanner::Newlines),
                StepSpec::Scan(Scanner::Qwen2),
            ],
            no_clean,
        ),
        "minicpm5" => (
            &[
                StepSpec::Regex("\\p{N}{1,3}"),
                StepSpec::Regex(
                    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
                ),
            ],
            PreFlags {
                ignore_merges: true,
                ..f
            },
        ),
        "gemma4" | "granite-embed-multi-311m" => (
            NEWLINES_ONLY,
            PreFlags {
                spm_style: true,
                ..f
            },
        ),
        "sarvam-moe" => (
            NEWLINES_ONLY,
            PreFlags {
                spm_style: true,
                ..no_clean
            },
        ),
        "tiny_aya" | "cohere2moe" | "afmoe" => {
            return Err(PreError::Unsupported(
                "its digit-grouping scanner (groups of three from the right) is not implemented",
            ))
        }
        "kimi-k2" => {
            return Err(PreError::Unsupported(
                "its Han-aware scanner is not implemented",
            ))
        }
        "superbpe" => {
            return Err(PreError::Unsupported(
                "its pattern splits with empty matches, which is not implemented",
            ))
        }
        "exaone-moe" => {
            return Err(PreError::Unsupported(
                "its pattern repeats a multi-character group without bound, which is not implemented",
            ))
        }
        "whitespace" => {
            return Err(PreError::Unsupported(
                "the whitespace tokenizer is not implemented",
            ))
        }
        _ => return Err(PreError::Unknown),
    })
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value ("" when the key is absent).
    pub(crate) fn for_name(name: &str) -> Result<PreTokenizer, PreError> {
        let (specs, flags) = table(name)?;
        let steps = specs
            .iter()
            .map(|s| match *s {
                StepSpec::Scan(k) => Ok(Step::Scan(k)),
                StepSpec::Regex(r) => Pattern::new(r).map(Step::Pattern),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(PreError::Pattern)?;
        Ok(PreTokenizer { steps, flags })
    }

    /// Cuts `text` into words; returns byte ranges that cover `text` in order.
    pub(crate) fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let mut cps = Vec::with_capacity(text.len());
        let mut offsets = Vec::with_capacity(text.len() + 1);
        for (i, c) in text.char_indices() {
            offsets.push(i);
            cps.push(Cp::new(c));
        }
        offsets.push(text.len());
        if cps.is_empty() {
            return Vec::new();
        }
        let mut segs = vec![(0usize, cps.len())];
        for step in &self.steps {
            segs = match step {
                Step::Pattern(p) => p.split(&cps, &segs),
                Step::Scan(k) => {
                    let mut out = Vec::with_capacity(segs.len() * 2);
                    for &(a, b) in &segs {
                        scan(*k, &cps, a, b, &mut out);
                    }
                    out
                }
            };
        }
        segs.into_iter()
            .filter(|(a, b)| b > a)
            .map(|(a, b)| (offsets[a], offsets[b]))
            .collect()
    }
}

const OUT: u32 = u32::MAX;

/// Runs a hand-written scanner over `t[ini..end]`, pushing the pieces (which cover it).
fn scan(kind: Scanner, t: &[Cp], ini: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    if kind == Scanner::Newlines {
        let mut pos = ini;
        while pos < end {
            let nl = t[pos].cp == u32::from(b'\n');
            let start = pos;
            while pos < end && (t[pos].cp == u32::from(b'\n')) == nl {
                pos += 1;
            }
            out.push((start, pos));
        }
        return;
    }
    let cp = |p: usize| if p >= ini && p < end { t[p].cp } else { OUT };
    let fl = |p: usize| if p >= ini && p < end { t[p].flags } else { 0 };
    let is = |c: u32, ch: u8| c == u32::from(ch);
    let lower = |c: u32| {
        if (u32::from(b'A')..=u32::from(b'Z')).contains(&c) {
            c + 32
        } else {
            c
        }
    };
    let is_rn = |c: u32| is(c, b'\r') || is(c, b'\n');
    // Letters as this scanner counts them.
    let letter = if kind == Scanner::Qwen35 {
        LETTER | MARK
    } else {
        LETTER
    };

    let mut pos = ini;
    let mut prev = ini;
    let mut emit = |to: usize, out: &mut Vec<(usize, usize)>| {
        if to > prev {
            out.push((prev, to));
        }
        prev = to;
    };
    while pos < end {
        let c = cp(pos);
        let f = fl(pos);

        // Contractions: 's 't 'm 'd 're 've 'll (case-insensitive except for GPT-2).
        if is(c, b'\'') && pos + 1 < end {
            let fold = |c: u32| if kind == Scanner::Gpt2 { c } else { lower(c) };
            let n1 = fold(cp(pos + 1));
            if is(n1, b's') || is(n1, b't') || is(n1, b'm') || is(n1, b'd') {
                pos += 2;
                emit(pos, out);
                continue;
            }
            if pos + 2 < end {
                let n2 = fold(cp(pos + 2));
                if (is(n1, b'r') && is(n2, b'e'))
                    || (is(n1, b'v') && is(n2, b'e'))
                    || (is(n1, b'l') && is(n2, b'l'))
                {
                    pos += 3;
                    emit(pos, out);
                    continue;
                }
            }
        }

        if kind == Scanner::Gpt2 {
            let mut f2 = if is(c, b' ') { fl(pos + 1) } else { f };
            // ` ?\p{L}+`, ` ?\p{N}+`
            if let Some(class) = [LETTER, NUMBER].into_iter().find(|&k| f2 & k != 0) {
                pos += usize::from(is(c, b' '));
                while f2 & class != 0 {
                    pos += 1;
                    f2 = fl(pos);
                }
                emit(pos, out);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+`
            if f2 & (WHITESPACE | LETTER | NUMBER) == 0 && f2 != 0 {
                pos += usize::from(is(c, b' '));
                while f2 & (WHITESPACE | LETTER | NUMBER) == 0 && f2 != 0 {
                    pos += 1;
                    f2 = fl(pos);
                }
                emit(pos, out);
                continue;
            }
        } else {
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(is_rn(c) || f & NUMBER != 0) && (f & letter != 0 || fl(pos + 1) & letter != 0) {
                pos += 1;
                while fl(pos) & letter != 0 {
                    pos += 1;
                }
                emit(pos, out);
                continue;
            }
            // `\p{N}{1,3}` or `\p{N}`
            if f & NUMBER != 0 {
                if kind == Scanner::Llama3 {
                    let mut group = pos;
                    while fl(pos) & NUMBER != 0 {
                        pos += 1;
                        if pos - group >= 3 {
                            emit(pos, out);
                            group = pos;
                        }
                    }
                } else {
                    pos += 1;
                }
                emit(pos, out);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let mut f2 = if is(c, b' ') { fl(pos + 1) } else { f };
            let stop = WHITESPACE | letter | NUMBER;
            if f2 & stop == 0 && f != 0 {
                pos += usize::from(is(c, b' '));
                while f2 & stop == 0 && f2 != 0 {
                    pos += 1;
                    f2 = fl(pos);
                }
                while is_rn(cp(pos)) {
                    pos += 1;
                }
                emit(pos, out);
                continue;
            }
        }

        let mut n_ws = 0;
        let mut last_rn_end = 0;
        while fl(pos + n_ws) & WHITESPACE != 0 {
            if kind != Scanner::Gpt2 && is_rn(cp(pos + n_ws)) {
                last_rn_end = pos + n_ws + 1;
            }
            n_ws += 1;
        }
        if last_rn_end > 0 {
            // `\s*[\r\n]+`
            pos = last_rn_end;
        } else if n_ws > 1 && cp(pos + n_ws) != OUT {
            // `\s+(?!\S)`: leave the last space to the word that follows
            pos += n_ws - 1;
        } else if n_ws > 0 {
            pos += n_ws;
        } else {
            pos += 1;
        }
        emit(pos, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, s: &str) -> Vec<String> {
        let p = PreTokenizer::for_name(pre).unwrap();
        p.split(s)
            .into_iter()
            .map(|(a, b)| s[a..b].to_string())
            .collect()
    }

    #[test]
    fn every_supported_name_compiles() {
        for name in [
            "",
            "default",
            "llama3",
            "llama-bpe",
            "dbrx",
            "chatglm-bpe",
            "glm4",
            "jais-2",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "spark2_5",
            "youtu",
            "falcon",
            "starcoder",
            "smollm",
            "gpt-2",
            "mpt",
            "qwen2",
            "qwen35",
            "poro-chat",
            "viking",
            "tekken",
            "chameleon",
            "gpt-4o",
            "granite-embed-multi-97m",
            "bailingmoe",
            "seed-coder",
            "ufakzeka",
            "laguna",
            "minicpm5",
            "gemma4",
            "sarvam-moe",
        ] {
            if let Err(e) = PreTokenizer::for_name(name) {
                panic!("{name}: {e:?}");
            }
        }
        assert!(matches!(
            PreTokenizer::for_name("kimi-k2"),
            Err(PreError::Unsupported(_))
        ));
        assert_eq!(
            PreTokenizer::for_name("nonsense").err(),
            Some(PreError::Unknown)
        );
    }

    #[test]
    fn gpt2() {
        assert_eq!(
            words("gpt-2", "Hello world's  end!!\n\n x 123"),
            ["Hello", " world", "'s", " ", " end", "!!", "\n\n", " x", " 123"]
        );
    }

    #[test]
    fn llama3() {
        assert_eq!(
            words("llama-bpe", "I'M 12345 here...\n\n  ok"),
            ["I", "'M", " ", "123", "45", " here", "...\n\n", " ", " ok"]
        );
    }

    #[test]
    fn starcoder_digits() {
        assert_eq!(words("smollm", "ab 123"), ["ab", " ", "1", "2", "3"]);
    }
}
