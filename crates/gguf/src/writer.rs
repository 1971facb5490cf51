//! A GGUF v3 writer, for tests and tools that make small models.

use std::io::Write;
use std::path::Path;

use crate::error::GgufError;
use crate::reader::ALIGNMENT_KEY;
use crate::value::type_id;
use crate::{GgmlType, GgufFile, Value, DEFAULT_ALIGNMENT, MAX_DIMS};

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF v3 file in memory: metadata in the order added, then tensor infos, then the
/// tensor data, each tensor aligned.
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether every array in `v` (at any depth) holds elements of one type.
fn homogeneous(v: &Value) -> bool {
    match v {
        Value::Array(items) => {
            let first = items.first().map(Value::type_id);
            items
                .iter()
                .all(|x| Some(x.type_id()) == first && homogeneous(x))
        }
        _ => true,
    }
}

fn write_payload(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            // An empty array has no element to take the type from; any type reads back the same.
            let elem_ty = items.first().map_or(type_id::U8, Value::type_id);
            out.extend_from_slice(&elem_ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                write_payload(out, x);
            }
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn pad_to(out: &mut Vec<u8>, alignment: u64) {
    let len = out.len() as u64;
    let padded = len.div_ceil(alignment) * alignment;
    out.resize(padded as usize, 0);
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// A writer holding a copy of `file`: its metadata (`general.alignment` included) and its
    /// tensors, in the file's order. Tests and tools change what they need (`add` replaces a
    /// key in place) and write the result.
    pub fn from_file(file: &GgufFile) -> Result<GgufWriter, GgufError> {
        let mut w = GgufWriter::new();
        for (key, value) in file.metadata() {
            // A parsed array holds one element type, so this cannot panic.
            w.add(key, value.clone());
        }
        for t in file.tensors() {
            w.add_tensor(&t.name, &t.dims, t.ty, file.tensor_data(t).to_vec())?;
        }
        Ok(w)
    }

    /// Sets `general.alignment`. The value is written as given, so a test can make a file with
    /// an invalid alignment; the padding then uses 1 for 0.
    pub fn with_alignment(mut self, alignment: u64) -> GgufWriter {
        let value = match u32::try_from(alignment) {
            Ok(a) => Value::U32(a),
            Err(_) => Value::U64(alignment),
        };
        self.set(ALIGNMENT_KEY, value);
        self.alignment = alignment.max(1);
        self
    }

    /// Adds a metadata entry, or replaces the value of an existing key in place. Setting
    /// `general.alignment` to a power-of-two u32 also sets the alignment used for the data.
    ///
    /// # Panics
    /// If an array (at any depth) mixes element types: GGUF cannot store that, and such a
    /// value can only come from a bug in the calling code.
    pub fn add(&mut self, key: &str, value: impl Into<Value>) -> &mut GgufWriter {
        let value = value.into();
        assert!(
            homogeneous(&value),
            "GgufWriter::add: the array for key `{key}` mixes element types"
        );
        if key == ALIGNMENT_KEY {
            if let Value::U32(a) = value {
                if a.is_power_of_two() {
                    self.alignment = a.into();
                }
            }
        }
        self.set(key, value);
        self
    }

    fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds a tensor. `dims[0]` is the row length; `data` must hold exactly the bytes that
    /// `ty` needs for the element count, and the name must be new.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut GgufWriter, GgufError> {
        if dims.len() > MAX_DIMS as usize {
            return Err(GgufError::TooManyDims {
                tensor: name.to_string(),
                n_dims: dims.len().try_into().unwrap_or(u32::MAX),
                max: MAX_DIMS,
                offset: 0,
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor {
                tensor: name.to_string(),
                offset: 0,
            });
        }
        let n_elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let expected = n_elements.and_then(|n| ty.bytes_for(n));
        let row_ok = dims.first().copied().unwrap_or(1) % ty.block_size() as u64 == 0;
        if !row_ok || expected != Some(data.len() as u64) {
            return Err(GgufError::DataLength {
                tensor: name.to_string(),
                ty,
                n_elements: n_elements.unwrap_or(u64::MAX),
                expected: match (row_ok, expected) {
                    (true, Some(n)) => n.to_string(),
                    _ => format!("rows that are whole {}-element blocks", ty.block_size()),
                },
                found: data.len() as u64,
            });
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment;
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            write_payload(&mut out, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            offset = offset.div_ceil(align) * align;
            write_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += t.data.len() as u64;
        }
        for t in &self.tensors {
            pad_to(&mut out, align);
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// Writes the file to `path` atomically: a temporary file beside it, fsync, rename.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io = |op, source| GgufError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model.gguf".to_string());
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp).map_err(|e| io("cannot create", e))?;
            f.write_all(&self.to_bytes())
                .map_err(|e| io("cannot write", e))?;
            f.sync_all().map_err(|e| io("cannot sync", e))?;
            std::fs::rename(&tmp, path).map_err(|e| io("cannot rename into", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return result;
        }
        // Make the rename itself durable; not every platform can open a directory.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}
