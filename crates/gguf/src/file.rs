//! An opened GGUF file: its bytes (an mmap or a vector), the parsed metadata and tensor infos,
//! and typed getters.

use std::path::Path;

use crate::error::GgufError;
use crate::reader;
use crate::{GgmlType, Value};

/// Where one tensor is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// As in the file: `dims[0]` is the row length (ggml's `ne0`), the fastest-moving index.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (1 for a tensor without dimensions).
    pub fn n_elements(&self) -> u64 {
        // Checked when the file was parsed; saturate for infos built by hand.
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }
}

enum Bytes {
    /// The mapping, and the file kept open for reads that should not touch the mapping.
    Mapped(memmap2::Mmap, std::fs::File),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m, _) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file. Tensor data is borrowed from the file's bytes without copying.
pub struct GgufFile {
    bytes: Bytes,
    header: reader::Header,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("file_size", &self.file_size())
            .field("metadata_keys", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

#[allow(unsafe_code)]
fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and private to this process. memmap2 cannot rule out
    // that another process truncates or rewrites the file while it is mapped; that is the
    // usual contract of every mmap-based model loader (llama.cpp included): model files are
    // not modified while they are in use.
    unsafe { memmap2::Mmap::map(file) }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected,
        found: found.describe(),
    }
}

impl GgufFile {
    /// Maps the file at `path` and parses its header.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |op, source| GgufError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(|e| io("cannot open", e))?;
        let len = file.metadata().map_err(|e| io("cannot stat", e))?.len();
        // Mapping an empty file fails on some systems; an empty vector reports the error.
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            let map = map_file(&file).map_err(|e| io("cannot map", e))?;
            Bytes::Mapped(map, file)
        };
        Self::from_storage(bytes)
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(Bytes::Owned(bytes))
    }

    fn from_storage(bytes: Bytes) -> Result<GgufFile, GgufError> {
        let header = reader::parse(bytes.as_slice())?;
        Ok(GgufFile { bytes, header })
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Alignment of the data section and of each tensor (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute byte offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.bytes.as_slice().len() as u64
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.header.key_index.get(key)?;
        self.header.metadata.get(i).map(|(_, v)| v)
    }

    /// Looks up `key` and converts it with `f`; `Ok(None)` when absent, `WrongType` when `f`
    /// refuses the value.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| wrong_type(key, expected, v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "string", Value::as_str)
    }

    /// Any unsigned integer, or a non-negative signed one.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    /// Like [`get_u64`](Self::get_u64), and the value must fit in a u32.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        match self.get_u64(key)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| GgufError::OutOfRange {
                    key: key.to_string(),
                    value: v.to_string(),
                    target: "u32",
                }),
        }
    }

    /// An f32, an f64 or any integer.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "a number", Value::as_f32)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "bool", Value::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>, GgufError> {
        self.typed(key, "array", Value::as_array)
    }

    /// An array whose every element converts with `f`.
    fn typed_array<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Some(items) = v.as_array() else {
            return Err(wrong_type(key, expected, v));
        };
        items
            .iter()
            .map(|x| f(x).ok_or_else(|| wrong_type(key, expected, v)))
            .collect::<Result<Vec<T>, _>>()
            .map(Some)
    }

    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        self.typed_array(key, "array of string", Value::as_str)
    }

    /// An array of f32, f64 or integers.
    pub fn get_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        self.typed_array(key, "array of numbers", Value::as_f32)
    }

    /// An array of integers that all fit in an i32.
    pub fn get_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>, GgufError> {
        self.typed_array(key, "array of integers fitting in i32", |x| {
            x.as_i64().and_then(|n| i32::try_from(n).ok())
        })
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let i = *self.header.tensor_index.get(name)?;
        self.header.tensors.get(i)
    }

    /// The bytes of a tensor of this file, without copying. Bounds were checked when the file
    /// was opened; for a `TensorInfo` that does not describe this file's bytes the result is
    /// an empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = || {
            let start = usize::try_from(self.header.data_offset.checked_add(t.offset)?).ok()?;
            let end = start.checked_add(usize::try_from(t.n_bytes).ok()?)?;
            self.bytes.as_slice().get(start..end)
        };
        range().unwrap_or(&[])
    }

    /// Copies `buf.len()` bytes of a tensor, from `offset` within it, into `buf`. For a mapped
    /// file this reads through the file rather than the mapping, so that a tensor that is
    /// converted once at load time does not stay resident twice (as the mapping's pages and as
    /// the converted copy).
    pub fn read_tensor_bytes(
        &self,
        t: &TensorInfo,
        offset: u64,
        buf: &mut [u8],
    ) -> std::io::Result<()> {
        let out_of_range = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bytes {offset}.. of tensor {} are past its end", t.name),
            )
        };
        offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= t.n_bytes)
            .ok_or_else(out_of_range)?;
        let start = self
            .header
            .data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(offset))
            .ok_or_else(out_of_range)?;
        match &self.bytes {
            #[cfg(unix)]
            Bytes::Mapped(_, file) => {
                use std::os::unix::fs::FileExt;
                file.read_exact_at(buf, start)
            }
            other => {
                let start = usize::try_from(start).map_err(|_| out_of_range())?;
                let src = other
                    .as_slice()
                    .get(start..start + buf.len())
                    .ok_or_else(out_of_range)?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}
