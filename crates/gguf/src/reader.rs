//! Parsing of the GGUF header: metadata, tensor infos and the layout of the data section.
//!
//! Nothing read from the file is trusted before it is checked: every count is compared with
//! the bytes left before anything is reserved for it, so memory use is bounded by a small
//! multiple of the input size, and every tensor must lie, aligned, inside the file.

use std::collections::HashMap;

use crate::error::GgufError;
use crate::file::TensorInfo;
use crate::value::{type_id, type_id_name, Value};
use crate::{GgmlType, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS};

pub(crate) const ALIGNMENT_KEY: &str = "general.alignment";

/// Smallest possible encoding of one metadata entry: empty key (8) + type (4) + a u8 value (1).
const MIN_KV_BYTES: u64 = 13;
/// Smallest possible tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;

type Metadata = (Vec<(String, Value)>, HashMap<String, usize>);

/// The parsed header.
pub(crate) struct Header {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    /// Absolute byte offset of the data section.
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The whole file's length: `buf.len()`, or more when `buf` is only its first bytes
    /// ([`header_size`]). Counts and lengths are checked against it; reads past `buf` are
    /// [`GgufError::Truncated`].
    len: u64,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// Bytes left in the file (not necessarily in `buf`).
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos as u64)
    }

    /// Bytes left in `buf`: the bound for memory reserved ahead of reading.
    fn in_buf(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let truncated = || GgufError::Truncated {
            what: what(),
            offset: self.offset(),
        };
        let n = usize::try_from(n).map_err(|_| truncated())?;
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A string: u64 length, then that many bytes of UTF-8.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len_at = self.offset();
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::Truncated {
                what: format!(
                    "{} (a string of {len} bytes, length at byte {len_at})",
                    what()
                ),
                offset: self.offset(),
            });
        }
        let at = self.offset();
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset: at + e.valid_up_to() as u64,
            }),
        }
    }

    fn count(&mut self, what: &'static str, min_bytes: u64) -> Result<u64, GgufError> {
        let offset = self.offset();
        let count = self.u64(&|| format!("{what} count"))?;
        let remaining = self.remaining();
        let max = remaining / min_bytes;
        if count > max {
            return Err(GgufError::CountTooLarge {
                what,
                count,
                offset,
                remaining,
                max,
            });
        }
        Ok(count)
    }
}

/// Bytes one array element of type `ty` takes at least; `None` for an unknown type.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::U64 | type_id::I64 | type_id::F64 => 8,
        type_id::STRING => 8,
        type_id::ARRAY => 12,
        _ => return None,
    })
}

/// Reads a value of type `ty` for key `key`; `depth` is how many arrays enclose it.
fn read_value(
    c: &mut Cursor<'_>,
    ty: u32,
    key: &str,
    depth: usize,
    what: &dyn Fn() -> String,
) -> Result<Value, GgufError> {
    Ok(match ty {
        type_id::U8 => Value::U8(u8::from_le_bytes(c.array(what)?)),
        type_id::I8 => Value::I8(i8::from_le_bytes(c.array(what)?)),
        type_id::U16 => Value::U16(u16::from_le_bytes(c.array(what)?)),
        type_id::I16 => Value::I16(i16::from_le_bytes(c.array(what)?)),
        type_id::U32 => Value::U32(u32::from_le_bytes(c.array(what)?)),
        type_id::I32 => Value::I32(i32::from_le_bytes(c.array(what)?)),
        type_id::F32 => Value::F32(f32::from_le_bytes(c.array(what)?)),
        type_id::U64 => Value::U64(u64::from_le_bytes(c.array(what)?)),
        type_id::I64 => Value::I64(i64::from_le_bytes(c.array(what)?)),
        type_id::F64 => Value::F64(f64::from_le_bytes(c.array(what)?)),
        type_id::BOOL => Value::Bool(u8::from_le_bytes(c.array(what)?) != 0),
        type_id::STRING => Value::String(c.string(what)?),
        type_id::ARRAY => {
            let at = c.offset();
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep {
                    key: key.to_string(),
                    max: MAX_ARRAY_DEPTH,
                    offset: at,
                });
            }
            let elem_ty = c.u32(&|| format!("element type of {}", what()))?;
            let min = min_value_bytes(elem_ty).ok_or_else(|| GgufError::UnknownValueType {
                key: key.to_string(),
                type_id: elem_ty,
                offset: at,
            })?;
            let count = c.u64(&|| format!("element count of {}", what()))?;
            let remaining = c.remaining();
            if count.checked_mul(min).is_none_or(|need| need > remaining) {
                return Err(GgufError::ArrayTooLarge {
                    key: key.to_string(),
                    count,
                    elem_type: type_id_name(elem_ty).unwrap_or("?"),
                    offset: at,
                    remaining,
                });
            }
            // `count * min <= remaining`; the reservation is also bounded by the bytes in hand
            // (a prefix may declare a far larger file).
            let mut items = Vec::with_capacity(count.min(c.in_buf()) as usize);
            for i in 0..count {
                let elem_what = || format!("element {i} of {}", what());
                items.push(read_value(c, elem_ty, key, depth + 1, &elem_what)?);
            }
            Value::Array(items)
        }
        _ => {
            return Err(GgufError::UnknownValueType {
                key: key.to_string(),
                type_id: ty,
                offset: c.offset().saturating_sub(4),
            })
        }
    })
}

fn read_header_start(c: &mut Cursor<'_>) -> Result<u32, GgufError> {
    let magic: [u8; 4] = c.array(&|| "magic".to_string())?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(&|| "version".to_string())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    Ok(version)
}

fn read_metadata(c: &mut Cursor<'_>, n_kv: u64) -> Result<Metadata, GgufError> {
    // Counts were checked against the remaining bytes; the reservations are also bounded by
    // the bytes in hand (a prefix may declare a far larger file).
    let reserve = n_kv.min(c.in_buf() / MIN_KV_BYTES) as usize;
    let mut metadata = Vec::with_capacity(reserve);
    let mut key_index = HashMap::with_capacity(reserve);
    for i in 0..n_kv {
        let key_at = c.offset();
        let key = c.string(&|| format!("key of metadata entry #{i}"))?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: key_at,
            });
        }
        let ty = c.u32(&|| format!("value type of key `{key}`"))?;
        let value = read_value(c, ty, &key, 0, &|| format!("value of key `{key}`"))?;
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    Ok((metadata, key_index))
}

fn alignment_of(
    metadata: &[(String, Value)],
    index: &HashMap<String, usize>,
) -> Result<u64, GgufError> {
    let Some(&i) = index.get(ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match metadata[i].1 {
        Value::U32(a) if a.is_power_of_two() => Ok(a.into()),
        Value::U32(a) => Err(GgufError::BadAlignment { value: a.into() }),
        ref v => Err(GgufError::WrongType {
            key: ALIGNMENT_KEY.to_string(),
            expected: "u32",
            found: v.describe(),
        }),
    }
}

fn read_tensor_info(
    c: &mut Cursor<'_>,
    i: u64,
    index: &HashMap<String, usize>,
) -> Result<TensorInfo, GgufError> {
    let name_at = c.offset();
    let name = c.string(&|| format!("name of tensor #{i}"))?;
    if index.contains_key(&name) {
        return Err(GgufError::DuplicateTensor {
            tensor: name,
            offset: name_at,
        });
    }
    let dims_at = c.offset();
    let n_dims = c.u32(&|| format!("dimension count of tensor `{name}`"))?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name,
            n_dims,
            max: MAX_DIMS,
            offset: dims_at,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(c.u64(&|| format!("dimension {d} of tensor `{name}`"))?);
    }
    let ty_at = c.offset();
    let ty_id = c.u32(&|| format!("type of tensor `{name}`"))?;
    let data_offset = c.u64(&|| format!("data offset of tensor `{name}`"))?;
    let Some(ty) = GgmlType::from_id(ty_id) else {
        return Err(GgufError::UnknownTensorType {
            tensor: name,
            type_id: ty_id,
            offset: ty_at,
        });
    };
    // ggml counts elements in i64: keep every dimension and the product within it.
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64 && dims.iter().all(|&d| d <= i64::MAX as u64));
    let overflow = |name: String, dims: Vec<u64>| GgufError::ElementCountOverflow {
        tensor: name,
        dims,
        offset: dims_at,
    };
    let Some(n_elements) = n_elements else {
        return Err(overflow(name, dims));
    };
    let row_len = dims.first().copied().unwrap_or(1);
    let block_size = ty.block_size() as u64;
    if row_len % block_size != 0 {
        return Err(GgufError::BadRowLength {
            tensor: name,
            ty,
            row_len,
            block_size,
            offset: dims_at,
        });
    }
    let Some(n_bytes) = ty.bytes_for(n_elements) else {
        return Err(overflow(name, dims));
    };
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset: data_offset,
        n_bytes,
    })
}

/// Checks that every tensor is aligned, inside the file and overlaps no other.
fn check_layout(
    tensors: &[TensorInfo],
    data_offset: u64,
    alignment: u64,
    file_size: u64,
) -> Result<(), GgufError> {
    let mut spans = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_size => {
                if t.n_bytes > 0 {
                    spans.push((start, end, t));
                }
            }
            _ => {
                return Err(GgufError::TensorPastEnd {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_size,
                })
            }
        }
    }
    spans.sort_by_key(|&(start, end, _)| (start, end));
    for w in spans.windows(2) {
        let (a_start, a_end, a) = w[0];
        let (b_start, b_end, b) = w[1];
        if b_start < a_end {
            return Err(GgufError::TensorOverlap {
                tensor: b.name.clone(),
                start: b_start,
                end: b_end,
                other: a.name.clone(),
                other_start: a_start,
                other_end: a_end,
            });
        }
    }
    Ok(())
}

/// Parses and validates the header of a GGUF file held in `buf`.
pub(crate) fn parse(buf: &[u8]) -> Result<Header, GgufError> {
    parse_with_len(buf, buf.len() as u64)
}

/// How many bytes the header of a GGUF file of `file_size` bytes takes, counted up to the
/// start of the data section, judged from its first bytes `prefix`: `Ok(None)` when `prefix`
/// is too short to tell (fetch more and ask again), `Ok(Some(n))` when the header parsed and
/// every tensor lies inside the file (`prefix[..n]` or more is enough for [`GgufFile`]-style
/// checks of the metadata and tensor infos), an error when the header is invalid.
///
/// For reading a remote file's header with HTTP range requests without fetching its data.
///
/// [`GgufFile`]: crate::GgufFile
pub fn header_size(prefix: &[u8], file_size: u64) -> Result<Option<u64>, GgufError> {
    let file_size = file_size.max(prefix.len() as u64);
    match parse_with_len(prefix, file_size) {
        Ok(h) => Ok(Some(h.data_offset)),
        Err(GgufError::Truncated { .. }) if (prefix.len() as u64) < file_size => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse_with_len(buf: &[u8], len: u64) -> Result<Header, GgufError> {
    let mut c = Cursor { buf, pos: 0, len };
    let version = read_header_start(&mut c)?;
    let n_tensors = c.count("tensor", MIN_TENSOR_INFO_BYTES)?;
    let n_kv = c.count("metadata key/value", MIN_KV_BYTES)?;
    let (metadata, key_index) = read_metadata(&mut c, n_kv)?;
    let alignment = alignment_of(&metadata, &key_index)?;

    let reserve = n_tensors.min(c.in_buf() / MIN_TENSOR_INFO_BYTES) as usize;
    let mut tensors = Vec::with_capacity(reserve);
    let mut tensor_index = HashMap::with_capacity(reserve);
    for i in 0..n_tensors {
        let t = read_tensor_info(&mut c, i, &tensor_index)?;
        tensor_index.insert(t.name.clone(), tensors.len());
        tensors.push(t);
    }

    let end = c.offset();
    // `alignment` is a power of two no larger than 2^31 and `end` is at most the file size.
    let data_offset = end.div_ceil(alignment) * alignment;
    check_layout(&tensors, data_offset, alignment, len)?;
    Ok(Header {
        version,
        alignment,
        metadata,
        key_index,
        tensors,
        tensor_index,
        data_offset,
    })
}
