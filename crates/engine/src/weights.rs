//! Typed, checked handles to tensors in the mapped model file: zero copy, except the matrices
//! that the packed kernels serve, which are repacked once at load time.

use crate::error::EngineError;
use gguf::{GgmlType, GgufFile};
use kernels::matmul::QMatrix;
use kernels::packed::PackedMatrix;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// A 2-D weight in the file: `rows` rows of `cols` elements (GGUF dims `[cols, rows]`).
#[derive(Debug, Clone)]
pub struct Mat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    tensor: usize,
    /// The same matrix in the packed layout, where this CPU has kernels for it.
    pub packed: Option<Arc<PackedMatrix>>,
}

impl Mat {
    /// The matrix's bytes in the mapping.
    pub fn view<'f>(&self, file: &'f GgufFile) -> QMatrix<'f> {
        let info = &file.tensors()[self.tensor];
        QMatrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: file.tensor_data(info),
        }
    }
}

/// Looks tensors up by name for one architecture, checking shapes and types.
///
/// A model loads in two passes over its architecture's load function: the first (the loader
/// [`recording`](TensorLoader::recording)) only notes which matrices get packed, then
/// [`TensorLoader::pack_recorded`] packs all of them in one parallel pass, and the second
/// pass finds them packed.
pub struct TensorLoader<'f> {
    file: &'f GgufFile,
    arch: &'f str,
    /// Packed copies by tensor index, so that a tensor read twice (a tied output head) is
    /// packed once.
    packed: RefCell<HashMap<usize, Arc<PackedMatrix>>>,
    /// While recording: the matrices to pack, by tensor index.
    wanted: RefCell<Option<Vec<(usize, usize, usize)>>>,
}

/// Packing is on unless HEARTH_NO_PACK is set to something other than 0 (for comparisons).
fn packing_enabled() -> bool {
    std::env::var_os("HEARTH_NO_PACK").is_none_or(|v| v.is_empty() || v == "0")
}

impl<'f> TensorLoader<'f> {
    pub fn new(file: &'f GgufFile, arch: &'f str) -> Self {
        TensorLoader {
            file,
            arch,
            packed: RefCell::new(HashMap::new()),
            wanted: RefCell::new(None),
        }
    }

    /// A loader whose matrices come back unpacked while it notes the ones to pack.
    pub fn recording(file: &'f GgufFile, arch: &'f str) -> Self {
        let t = TensorLoader::new(file, arch);
        *t.wanted.borrow_mut() = Some(Vec::new());
        t
    }

    /// Packs every matrix noted while recording, all in one parallel pass over the file, and
    /// stops recording: later requests for them get the packed copies.
    pub fn pack_recorded(&self) -> Result<(), EngineError> {
        let wanted = self.wanted.borrow_mut().take();
        wanted.map_or(Ok(()), |w| self.pack_tensors(&w))
    }

    /// Packs tensors `(index, rows, cols)` not packed yet into the cache, in one parallel
    /// pass of slices of rows read through the file.
    fn pack_tensors(&self, wanted: &[(usize, usize, usize)]) -> Result<(), EngineError> {
        let infos = self.file.tensors();
        let mut idxs = Vec::new();
        let mut mats = Vec::new();
        for &(idx, rows, cols) in wanted {
            if idxs.contains(&idx) || self.packed.borrow().contains_key(&idx) {
                continue;
            }
            if let Some(p) = PackedMatrix::new(infos[idx].ty, rows, cols) {
                idxs.push(idx);
                mats.push(p);
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let row_bytes: Vec<u64> = mats.iter().map(|m| m.src_row_bytes() as u64).collect();
        PackedMatrix::pack_many(&mut mats, threads, |m, first_row, buf| {
            let info = &infos[idxs[m]];
            self.file
                .read_tensor_bytes(info, first_row as u64 * row_bytes[m], buf)
                .map_err(|e| (m, e))
        })
        .map_err(|(m, e)| EngineError::TensorRead {
            name: infos[idxs[m]].name.clone(),
            source: e,
        })?;
        let mut packed = self.packed.borrow_mut();
        for (idx, mat) in idxs.into_iter().zip(mats) {
            packed.insert(idx, Arc::new(mat));
        }
        Ok(())
    }

    /// The packed copy of tensor `idx` (a checked `rows × cols` matrix), made on first use
    /// (unless recording); `None` where no packed kernel serves it.
    fn pack(
        &self,
        idx: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Option<Arc<PackedMatrix>>, EngineError> {
        let info = &self.file.tensors()[idx];
        if !packing_enabled() || !PackedMatrix::supported(info.ty, rows, cols) {
            return Ok(None);
        }
        if let Some(wanted) = self.wanted.borrow_mut().as_mut() {
            wanted.push((idx, rows, cols));
            return Ok(None);
        }
        self.pack_tensors(&[(idx, rows, cols)])?;
        Ok(self.packed.borrow().get(&idx).cloned())
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.file.tensors().iter().position(|t| t.name == name)
    }

    fn missing(&self, name: &str) -> EngineError {
        EngineError::MissingTensor {
            arch: self.arch.to_string(),
            name: name.to_string(),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.index(name).is_some()
    }

    /// A `rows × cols` weight matrix (GGUF dims `[cols, rows]`) for products, packed where a
    /// packed kernel serves its type.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Mat, EngineError> {
        let mut m = self.table(name, rows, cols)?;
        m.packed = self.pack(m.tensor, rows, cols)?;
        Ok(m)
    }

    /// A `rows × cols` matrix read by rows in place (an embedding table), never packed.
    pub fn table(&self, name: &str, rows: usize, cols: usize) -> Result<Mat, EngineError> {
        let idx = self.index(name).ok_or_else(|| self.missing(name))?;
        let info = &self.file.tensors()[idx];
        let expected = [cols as u64, rows as u64];
        let dims_ok = info.dims.len() >= 2
            && info.dims[..2] == expected
            && info.dims[2..].iter().all(|&d| d == 1);
        if !dims_ok {
            return Err(EngineError::BadTensorShape {
                name: name.to_string(),
                found: info.dims.clone(),
                expected: expected.to_vec(),
            });
        }
        if kernels::quant::format(info.ty).is_none() {
            return Err(EngineError::UnsupportedTensorType {
                name: name.to_string(),
                ty: info.ty,
            });
        }
        Ok(Mat {
            ty: info.ty,
            rows,
            cols,
            tensor: idx,
            packed: None,
        })
    }

    pub fn opt_matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Option<Mat>, EngineError> {
        if self.has(name) {
            self.matrix(name, rows, cols).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A 1-D tensor of `len` elements, dequantized to f32 (norm weights and biases are small).
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, EngineError> {
        let idx = self.index(name).ok_or_else(|| self.missing(name))?;
        let info = &self.file.tensors()[idx];
        let dims_ok =
            info.dims.first() == Some(&(len as u64)) && info.dims[1..].iter().all(|&d| d == 1);
        if !dims_ok {
            return Err(EngineError::BadTensorShape {
                name: name.to_string(),
                found: info.dims.clone(),
                expected: vec![len as u64],
            });
        }
        let format =
            kernels::quant::format(info.ty).ok_or_else(|| EngineError::UnsupportedTensorType {
                name: name.to_string(),
                ty: info.ty,
            })?;
        // Read through the file, not the mapping: the kernel may map a whole large page-cache
        // folio (megabytes of neighbouring weights, already packed) on a fault in a small
        // norm vector, and those pages would count as resident for the whole run.
        let mut bytes = vec![0u8; self.file.tensor_data(info).len()];
        self.file
            .read_tensor_bytes(info, 0, &mut bytes)
            .map_err(|e| EngineError::TensorRead {
                name: name.to_string(),
                source: e,
            })?;
        let mut out = vec![0.0; len];
        format.dequantize_row(&bytes, &mut out);
        Ok(out)
    }

    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, EngineError> {
        if self.has(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Vocabulary sizes beyond this are treated as a corrupt file.
const MAX_VOCAB: u64 = 1 << 22;

impl TensorLoader<'_> {
    /// The number of rows (vocabulary size) of an embedding table `[n_embd, n_vocab]`.
    pub fn vocab_rows(&self, name: &str, n_embd: usize) -> Result<usize, EngineError> {
        let idx = self.index(name).ok_or_else(|| self.missing(name))?;
        let dims = &self.file.tensors()[idx].dims;
        match dims.as_slice() {
            [cols, rows, rest @ ..]
                if *cols == n_embd as u64
                    && (1..=MAX_VOCAB).contains(rows)
                    && rest.iter().all(|&d| d == 1) =>
            {
                Ok(*rows as usize)
            }
            _ => Err(EngineError::BadTensorShape {
                name: name.to_string(),
                found: dims.clone(),
                expected: vec![n_embd as u64, 0],
            }),
        }
    }
}
