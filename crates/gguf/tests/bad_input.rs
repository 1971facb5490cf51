//! Malformed files: each must give its own error variant with a message that says what was
//! wrong and where, never a panic or a huge allocation.

use gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value};
use proptest::prelude::*;

/// A GGUF file written byte by byte, so that any field can be made wrong.
#[derive(Clone)]
struct Raw(Vec<u8>);

const T_U8: u32 = 0;
const T_U32: u32 = 4;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;

impl Raw {
    fn new(n_tensors: u64, n_kv: u64) -> Raw {
        Raw(b"GGUF".to_vec()).u32(3).u64(n_tensors).u64(n_kv)
    }
    fn u32(mut self, v: u32) -> Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &[u8]) -> Raw {
        self.u64(s.len() as u64).bytes(s)
    }
    fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.str(key.as_bytes()).u32(T_U32).u32(v)
    }
    /// A tensor info: name, dims, ggml type id, data offset.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Zero padding up to a multiple of `align`, then `n` data bytes.
    fn data(mut self, align: usize, n: usize) -> Raw {
        let len = self.0.len().div_ceil(align) * align;
        self.0.resize(len + n, 0);
        self
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn parse(self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.0)
    }
    fn err(self) -> GgufError {
        match self.parse() {
            Ok(f) => panic!("expected an error, parsed {f:?}"),
            Err(e) => e,
        }
    }
}

/// Asserts that `msg` contains every one of `parts`.
fn says(e: &GgufError, parts: &[&str]) {
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

const F32: u32 = 0;
const Q4_0: u32 = 2;

#[test]
fn valid_raw_file_parses() {
    // The builder itself makes good files: the tests below each break exactly one thing.
    let f = Raw::new(2, 1)
        .kv_u32("general.alignment", 32)
        .tensor("a", &[4], F32, 0)
        .tensor("b", &[32], Q4_0, 32)
        .data(32, 32 + 18)
        .parse()
        .unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()).len(), 18);
}

#[test]
fn bad_magic() {
    let e = Raw(b"GGML".to_vec()).u32(3).u64(0).u64(0).err();
    assert!(
        matches!(e, GgufError::BadMagic { found } if &found == b"GGML"),
        "{e}"
    );
    says(&e, &["bad magic", "GGML", "\"GGUF\""]);
    let e = Raw(vec![0x7f, b'E', b'L', b'F', 0, 0]).err();
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
    says(&e, &[".ELF"]);
}

#[test]
fn unsupported_version() {
    for v in [0u32, 1, 4, u32::MAX] {
        let e = Raw(b"GGUF".to_vec()).u32(v).u64(0).u64(0).err();
        assert!(
            matches!(e, GgufError::UnsupportedVersion(x) if x == v),
            "{e}"
        );
        says(&e, &[&format!("version {v}"), "byte offset 4", "2 and 3"]);
    }
    let e = Raw(b"GGUF".to_vec()).u32(3u32.swap_bytes()).err();
    says(&e, &["big-endian"]);
}

#[test]
fn huge_tensor_count() {
    let e = Raw::new(u64::MAX, 0).err();
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                what: "tensor",
                count: u64::MAX,
                offset: 8,
                ..
            }
        ),
        "{e}"
    );
    says(&e, &["tensor count 18446744073709551615", "byte offset 8"]);
    // Large but not absurd: still more than the file holds.
    let e = Raw::new(1 << 20, 0).bytes(&[0; 1000]).err();
    assert!(
        matches!(e, GgufError::CountTooLarge { what: "tensor", .. }),
        "{e}"
    );
}

#[test]
fn huge_kv_count() {
    let e = Raw::new(0, u64::MAX).err();
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                what: "metadata key/value",
                offset: 16,
                ..
            }
        ),
        "{e}"
    );
    says(&e, &["metadata key/value count", "byte offset 16"]);
}

#[test]
fn string_length_past_end() {
    let e = Raw::new(0, 1).u64(1000).bytes(&[b'a'; 20]).err();
    assert!(matches!(e, GgufError::Truncated { offset: 32, .. }), "{e}");
    says(
        &e,
        &["key of metadata entry #0", "1000 bytes", "byte offset 32"],
    );

    let e = Raw::new(0, 1)
        .str(b"general.name")
        .u32(T_STRING)
        .u64(u64::MAX)
        .err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    says(&e, &["`general.name`", "18446744073709551615 bytes"]);

    let e = Raw::new(1, 0).u64(1 << 40).bytes(&[0; 40]).err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    says(&e, &["name of tensor #0"]);
}

#[test]
fn array_size_overflow() {
    // count * 8 overflows u64.
    let e = Raw::new(0, 1)
        .str(b"arr")
        .u32(T_ARRAY)
        .u32(T_U64)
        .u64(u64::MAX / 2)
        .err();
    assert!(
        matches!(
            e,
            GgufError::ArrayTooLarge {
                elem_type: "u64",
                ..
            }
        ),
        "{e}"
    );
    says(
        &e,
        &[
            "`arr`",
            "9223372036854775807 elements of type u64",
            "byte offset 39",
        ],
    );

    // Fits in u64 but runs past the end of the file.
    let e = Raw::new(0, 1)
        .str(b"arr")
        .u32(T_ARRAY)
        .u32(T_U32)
        .u64(1000)
        .bytes(&[0; 100])
        .err();
    assert!(
        matches!(
            e,
            GgufError::ArrayTooLarge {
                count: 1000,
                remaining: 100,
                ..
            }
        ),
        "{e}"
    );
    says(&e, &["`arr`", "1000 elements of type u32", "100 bytes"]);

    // Strings: each needs at least its 8-byte length.
    let e = Raw::new(0, 1)
        .str(b"tokens")
        .u32(T_ARRAY)
        .u32(T_STRING)
        .u64(1 << 60)
        .bytes(&[0; 64])
        .err();
    assert!(
        matches!(
            e,
            GgufError::ArrayTooLarge {
                elem_type: "string",
                ..
            }
        ),
        "{e}"
    );

    // An element's string running past the end.
    let e = Raw::new(0, 1)
        .str(b"tokens")
        .u32(T_ARRAY)
        .u32(T_STRING)
        .u64(2)
        .str(b"ok")
        .u64(99)
        .err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    says(&e, &["element 1 of value of key `tokens`"]);
}

#[test]
fn unknown_value_type() {
    let e = Raw::new(0, 1).str(b"k.x").u32(13).u32(0).err();
    assert!(
        matches!(
            e,
            GgufError::UnknownValueType {
                type_id: 13,
                offset: 35,
                ..
            }
        ),
        "{e}"
    );
    says(&e, &["`k.x`", "type id 13", "byte offset 35"]);

    let e = Raw::new(0, 1)
        .str(b"k.arr")
        .u32(T_ARRAY)
        .u32(99)
        .u64(1)
        .u32(0)
        .err();
    assert!(
        matches!(e, GgufError::UnknownValueType { type_id: 99, .. }),
        "{e}"
    );
    says(&e, &["`k.arr`", "type id 99"]);
}

#[test]
fn unknown_tensor_type() {
    // 4 was Q4_2, long removed; 1000 never existed.
    for id in [4u32, 1000] {
        let e = Raw::new(1, 0).tensor("w", &[32], id, 0).data(32, 128).err();
        assert!(
            matches!(e, GgufError::UnknownTensorType { type_id, .. } if type_id == id),
            "{e}"
        );
        says(&e, &["`w`", &format!("type id {id}")]);
    }
}

#[test]
fn too_many_dims() {
    let e = Raw::new(1, 0)
        .tensor("w5", &[1, 1, 1, 1, 1], F32, 0)
        .data(32, 4)
        .err();
    assert!(
        matches!(
            e,
            GgufError::TooManyDims {
                n_dims: 5,
                offset: 34,
                ..
            }
        ),
        "{e}"
    );
    says(&e, &["`w5`", "5 dimensions", "byte offset 34", "at most 4"]);
    // A count of u32::MAX must not reserve anything.
    let e = Raw::new(1, 0).str(b"w").u32(u32::MAX).bytes(&[0; 64]).err();
    assert!(matches!(e, GgufError::TooManyDims { .. }), "{e}");
}

#[test]
fn element_count_overflow() {
    for dims in [
        vec![u64::MAX, 2],
        vec![1 << 32, 1 << 32],
        vec![1 << 63],
        vec![1 << 31, 1 << 31, 4],
    ] {
        let e = Raw::new(1, 0).tensor("big", &dims, F32, 0).err();
        assert!(
            matches!(e, GgufError::ElementCountOverflow { .. }),
            "{dims:?}: {e}"
        );
        says(&e, &["`big`", "overflows", &format!("{dims:?}")]);
    }
    // The element count fits but the byte count does not.
    let e = Raw::new(1, 0)
        .tensor("big", &[1 << 31, 1 << 31], F32, 0)
        .err();
    assert!(matches!(e, GgufError::ElementCountOverflow { .. }), "{e}");
}

#[test]
fn row_length_not_whole_blocks() {
    let e = Raw::new(1, 0)
        .tensor("q", &[16, 4], Q4_0, 0)
        .data(32, 36)
        .err();
    assert!(
        matches!(
            e,
            GgufError::BadRowLength {
                ty: GgmlType::Q4_0,
                row_len: 16,
                block_size: 32,
                ..
            }
        ),
        "{e}"
    );
    says(&e, &["`q`", "row length 16", "Q4_0 block size 32"]);
    // Rows of whole blocks are fine even when other dims are odd.
    Raw::new(1, 0)
        .tensor("q", &[32, 3], Q4_0, 0)
        .data(32, 54)
        .parse()
        .unwrap();
}

#[test]
fn tensor_data_past_end() {
    let r = Raw::new(1, 0).tensor("w", &[1024], F32, 0).data(32, 100);
    let size = r.len();
    let e = r.err();
    assert!(matches!(e, GgufError::TensorPastEnd { .. }), "{e}");
    says(&e, &["`w`", "..4160", &format!("({size} bytes)")]);

    // An offset so large that offset + size overflows.
    let e = Raw::new(1, 0)
        .tensor("w", &[8], F32, u64::MAX - 31)
        .data(32, 32)
        .err();
    assert!(matches!(e, GgufError::TensorPastEnd { .. }), "{e}");
    says(&e, &["`w`"]);
}

#[test]
fn overlapping_tensors() {
    let e = Raw::new(2, 0)
        .tensor("a", &[16], F32, 0)
        .tensor("b", &[8], F32, 32)
        .data(32, 64)
        .err();
    assert!(matches!(e, GgufError::TensorOverlap { .. }), "{e}");
    says(&e, &["`a`", "`b`", "overlaps"]);
    // Touching is not overlapping; empty tensors overlap nothing.
    Raw::new(3, 0)
        .tensor("a", &[8], F32, 0)
        .tensor("b", &[8], F32, 32)
        .tensor("e", &[0], F32, 32)
        .data(32, 64)
        .parse()
        .unwrap();
}

#[test]
fn misaligned_tensor() {
    let e = Raw::new(1, 0).tensor("w", &[4], F32, 4).data(32, 64).err();
    assert!(
        matches!(
            e,
            GgufError::MisalignedTensor {
                offset: 4,
                alignment: 32,
                ..
            }
        ),
        "{e}"
    );
    says(&e, &["`w`", "offset 4", "alignment 32"]);
    // With alignment 4 the same offset is fine.
    Raw::new(1, 1)
        .kv_u32("general.alignment", 4)
        .tensor("w", &[4], F32, 4)
        .data(4, 20)
        .parse()
        .unwrap();
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48, u32::MAX] {
        let e = Raw::new(0, 1).kv_u32("general.alignment", a).err();
        assert!(
            matches!(e, GgufError::BadAlignment { value } if value == u64::from(a)),
            "{e}"
        );
        says(
            &e,
            &[
                "general.alignment",
                &format!("alignment {a}"),
                "power of two",
            ],
        );
    }
    let e = Raw::new(0, 1)
        .str(b"general.alignment")
        .u32(T_U64)
        .u64(32)
        .err();
    assert!(
        matches!(
            e,
            GgufError::WrongType {
                expected: "u32",
                ..
            }
        ),
        "{e}"
    );
    says(&e, &["general.alignment", "expected u32, found u64"]);
    // The writer can make such files for tests like these.
    let e = GgufFile::from_bytes(GgufWriter::new().with_alignment(0).to_bytes()).unwrap_err();
    assert!(matches!(e, GgufError::BadAlignment { value: 0 }), "{e}");
}

#[test]
fn duplicate_key() {
    let e = Raw::new(0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2).err();
    assert!(
        matches!(e, GgufError::DuplicateKey { ref key, offset: 43 } if key == "a.b"),
        "{e}"
    );
    says(&e, &["`a.b`", "byte offset 43"]);
}

#[test]
fn duplicate_tensor_name() {
    let e = Raw::new(2, 0)
        .tensor("w", &[8], F32, 0)
        .tensor("w", &[8], F32, 32)
        .data(32, 64)
        .err();
    assert!(
        matches!(e, GgufError::DuplicateTensor { offset: 57, .. }),
        "{e}"
    );
    says(&e, &["`w`", "byte offset 57"]);
}

#[test]
fn invalid_utf8() {
    let bad = b"ab\xffcd";
    let e = Raw::new(0, 1).str(bad).u32(T_U8).bytes(&[0]).err();
    assert!(
        matches!(e, GgufError::InvalidUtf8 { offset: 34, .. }),
        "{e}"
    );
    says(&e, &["key of metadata entry #0", "byte offset 34"]);

    let e = Raw::new(0, 1).str(b"k").u32(T_STRING).str(bad).err();
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");
    says(&e, &["value of key `k`"]);

    let e = Raw::new(0, 1)
        .str(b"k")
        .u32(T_ARRAY)
        .u32(T_STRING)
        .u64(2)
        .str(b"fine")
        .str(b"\xc3")
        .err();
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");
    says(&e, &["element 1 of value of key `k`"]);

    let e = Raw::new(1, 0).tensor("w\u{1}", &[8], F32, 0).err();
    assert!(e.to_string().contains("w\u{1}")); // control chars are fine UTF-8
    let e = Raw::new(1, 0).str(bad).u32(1).u64(8).u32(F32).u64(0).err();
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");
    says(&e, &["name of tensor #0"]);
}

/// A key whose value is `depth` arrays nested in each other, the innermost holding one u8.
fn nested(depth: usize) -> Raw {
    let mut r = Raw::new(0, 1).str(b"deep").u32(T_ARRAY);
    for _ in 1..depth {
        r = r.u32(T_ARRAY).u64(1);
    }
    r.u32(T_U8).u64(1).bytes(&[7])
}

#[test]
fn nesting_depth_limit() {
    let f = nested(gguf::MAX_ARRAY_DEPTH).parse().unwrap();
    let mut v = f.get("deep").unwrap();
    for _ in 0..gguf::MAX_ARRAY_DEPTH {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &Value::U8(7));

    let e = nested(gguf::MAX_ARRAY_DEPTH + 1).err();
    assert!(matches!(e, GgufError::NestingTooDeep { .. }), "{e}");
    says(&e, &["`deep`", "nested deeper than 8"]);
    // Far deeper than any stack could take if it were not limited.
    let e = nested(100_000).err();
    assert!(matches!(e, GgufError::NestingTooDeep { .. }), "{e}");
}

fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama")
        .add("general.alignment", 32u32)
        .add("llama.block_count", 2u32)
        .add("f", 1.5f32)
        .add("tokens", vec!["a", "bc", "\u{2581}d"])
        .add("scores", vec![0.5f32, -1.0, 2.0])
        .add("nested", Value::Array(vec![Value::from(vec![1i64, -2])]))
        .add("flag", true);
    w.add_tensor("t.f32", &[4, 2], GgmlType::F32, vec![1; 32])
        .unwrap();
    w.add_tensor("t.q", &[32, 1], GgmlType::Q8_0, vec![2; 34])
        .unwrap();
    w.add_tensor("t.k", &[256], GgmlType::Q6_K, vec![3; 210])
        .unwrap();
    w.to_bytes()
}

#[test]
fn truncated_at_every_offset() {
    let full = valid_file();
    GgufFile::from_bytes(full.clone()).unwrap();
    for len in 0..full.len() {
        match GgufFile::from_bytes(full[..len].to_vec()) {
            Ok(_) => panic!("a file truncated to {len} of {} bytes parsed", full.len()),
            Err(
                GgufError::Truncated { .. }
                | GgufError::CountTooLarge { .. }
                | GgufError::ArrayTooLarge { .. }
                | GgufError::TensorPastEnd { .. },
            ) => {}
            Err(e) => panic!("truncated to {len}: unexpected error {e}"),
        }
    }
}

fn touch(bytes: Vec<u8>) {
    if let Ok(f) = GgufFile::from_bytes(bytes) {
        for t in f.tensors() {
            let data = f.tensor_data(t);
            assert_eq!(data.len() as u64, t.n_bytes);
        }
        for (k, _) in f.metadata() {
            let _ = (
                f.get_str(k),
                f.get_u32(k),
                f.get_f32_array(k),
                f.get_str_array(k),
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_mutations_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = valid_file();
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if do_cut {
            let n = cut.index(bytes.len());
            bytes.truncate(n);
        }
        touch(bytes);
    }

    #[test]
    fn random_words_in_header_never_panic(
        at in any::<prop::sample::Index>(),
        word in prop_oneof![Just(u64::MAX), Just(0u64), Just(1u64 << 32), any::<u64>()],
    ) {
        let mut bytes = valid_file();
        let i = at.index(bytes.len() - 8);
        bytes[i..i + 8].copy_from_slice(&word.to_le_bytes());
        touch(bytes);
    }
}
