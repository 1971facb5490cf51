//! Everything that can go wrong reading or writing a GGUF file. Each variant says what was
//! wrong and where: a byte offset from the start of the file, a metadata key or a tensor name.

use std::path::PathBuf;

use crate::GgmlType;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "not a GGUF file: bad magic {found:02x?} ({}) in the first 4 bytes, expected \"GGUF\"",
        printable(found)
    )]
    BadMagic { found: [u8; 4] },

    #[error("unsupported GGUF version {0} at byte offset 4: only versions 2 and 3 can be read{hint}", hint = version_hint(*.0))]
    UnsupportedVersion(u32),

    #[error("file truncated: {what} at byte offset {offset} runs past the end of the file")]
    Truncated { what: String, offset: u64 },

    #[error(
        "{what} count {count} at byte offset {offset} is impossible: the {remaining} bytes \
         left in the file can hold at most {max}"
    )]
    CountTooLarge {
        what: &'static str,
        count: u64,
        offset: u64,
        remaining: u64,
        max: u64,
    },

    #[error(
        "array in key `{key}` at byte offset {offset} claims {count} elements of type {elem_type}, \
         more than the {remaining} bytes left in the file can hold"
    )]
    ArrayTooLarge {
        key: String,
        count: u64,
        elem_type: &'static str,
        offset: u64,
        remaining: u64,
    },

    #[error("invalid UTF-8 in {what} at byte offset {offset}")]
    InvalidUtf8 { what: String, offset: u64 },

    #[error("key `{key}`: unknown value type id {type_id} at byte offset {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },

    #[error("key `{key}`: arrays nested deeper than {max} levels at byte offset {offset}")]
    NestingTooDeep {
        key: String,
        max: usize,
        offset: u64,
    },

    #[error("duplicate metadata key `{key}` at byte offset {offset}")]
    DuplicateKey { key: String, offset: u64 },

    #[error("duplicate tensor name `{tensor}` at byte offset {offset}")]
    DuplicateTensor { tensor: String, offset: u64 },

    #[error("tensor `{tensor}`: unknown or unsupported tensor type id {type_id} at byte offset {offset}")]
    UnknownTensorType {
        tensor: String,
        type_id: u32,
        offset: u64,
    },

    #[error(
        "tensor `{tensor}`: {n_dims} dimensions at byte offset {offset}, at most {max} are allowed"
    )]
    TooManyDims {
        tensor: String,
        n_dims: u32,
        max: u32,
        offset: u64,
    },

    #[error(
        "tensor `{tensor}`: element count of shape {dims:?} overflows (at byte offset {offset})"
    )]
    ElementCountOverflow {
        tensor: String,
        dims: Vec<u64>,
        offset: u64,
    },

    #[error(
        "tensor `{tensor}`: row length {row_len} (dims[0]) is not a multiple of the {ty} block \
         size {block_size} (at byte offset {offset})"
    )]
    BadRowLength {
        tensor: String,
        ty: GgmlType,
        row_len: u64,
        block_size: u64,
        offset: u64,
    },

    #[error(
        "tensor `{tensor}`: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error(
        "tensor `{tensor}`: data at byte offsets {start}..{end} runs past the end of the file \
         ({file_size} bytes)"
    )]
    TensorPastEnd {
        tensor: String,
        start: u64,
        end: u64,
        file_size: u64,
    },

    #[error(
        "tensor `{tensor}` (data at byte offsets {start}..{end}) overlaps tensor `{other}` \
         (data at {other_start}..{other_end})"
    )]
    TensorOverlap {
        tensor: String,
        start: u64,
        end: u64,
        other: String,
        other_start: u64,
        other_end: u64,
    },

    #[error("key `general.alignment`: alignment {value} is invalid: it must be a power of two")]
    BadAlignment { value: u64 },

    #[error("key `{key}`: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("key `{key}`: value {value} does not fit in {target}")]
    OutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },

    #[error(
        "tensor `{tensor}`: {found} data bytes given, but {n_elements} elements of {ty} need {expected}"
    )]
    DataLength {
        tensor: String,
        ty: GgmlType,
        n_elements: u64,
        expected: String,
        found: u64,
    },
}

fn printable(b: &[u8; 4]) -> String {
    b.iter()
        .map(|&c| if c.is_ascii_graphic() { c as char } else { '.' })
        .collect()
}

fn version_hint(v: u32) -> &'static str {
    if v == 1 {
        " (version 1 files are obsolete; convert the model again)"
    } else if v.swap_bytes() == 2 || v.swap_bytes() == 3 {
        " (this looks like a big-endian file; only little-endian files are supported)"
    } else {
        ""
    }
}
