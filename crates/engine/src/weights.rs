//! Typed, checked handles to tensors in the mapped model file: zero copy, except the matrices
//! the backend prepares its own copy of (the CPU repacks those its packed kernels serve) once
//! at load time.

use crate::backend::{Backend, PreparedWeight, WeightJob};
use crate::error::EngineError;
use gguf::{GgmlType, GgufFile};
use kernels::matmul::QMatrix;
use std::cell::RefCell;
use std::collections::HashMap;

/// A 2-D weight in the file: `rows` rows of `cols` elements (GGUF dims `[cols, rows]`).
#[derive(Debug, Clone)]
pub struct Mat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    tensor: usize,
    /// First row of this matrix in its tensor (an expert's slice of a 3-D tensor).
    row0: usize,
    /// The backend's own copy (the packed layout on the CPU), where it made one; otherwise
    /// products read [`Mat::view`].
    pub prepared: Option<PreparedWeight>,
}

impl Mat {
    /// The matrix's bytes in the mapping.
    pub fn view<'f>(&self, file: &'f GgufFile) -> QMatrix<'f> {
        let info = &file.tensors()[self.tensor];
        let total_rows = info.n_elements() / info.dims.first().copied().unwrap_or(1).max(1);
        let row_bytes = file.tensor_data(info).len() / (total_rows as usize).max(1);
        let data = &file.tensor_data(info)[self.row0 * row_bytes..][..self.rows * row_bytes];
        QMatrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }
}

/// Looks tensors up by name for one architecture, checking shapes and types.
///
/// A model loads in two passes over its architecture's load function: the first (the loader
/// [`recording`](TensorLoader::recording)) only notes which matrices the backend prepares,
/// then [`TensorLoader::prepare_recorded`] prepares all of them in one pass, and the second
/// pass finds them prepared.
pub struct TensorLoader<'f> {
    file: &'f GgufFile,
    arch: &'f str,
    backend: &'f dyn Backend,
    /// Prepared copies by (tensor index, first row), so that a tensor read twice (a tied
    /// output head) is prepared once.
    prepared: RefCell<HashMap<(usize, usize), PreparedWeight>>,
    /// While recording: the matrices to prepare.
    wanted: RefCell<Option<Vec<Wanted>>>,
    /// Which tensors the architecture used; a file with others is refused (see
    /// [`TensorLoader::check_all_claimed`]).
    claimed: RefCell<Vec<bool>>,
}

/// A matrix to prepare: rows `row0..row0 + rows` of tensor `idx`, each of `cols` elements.
#[derive(Clone, Copy, PartialEq)]
struct Wanted {
    idx: usize,
    row0: usize,
    rows: usize,
    cols: usize,
}

impl<'f> TensorLoader<'f> {
    /// A loader preparing weights for `backend`.
    pub fn new(file: &'f GgufFile, arch: &'f str, backend: &'f dyn Backend) -> Self {
        TensorLoader {
            file,
            arch,
            backend,
            prepared: RefCell::new(HashMap::new()),
            wanted: RefCell::new(None),
            claimed: RefCell::new(vec![false; file.tensors().len()]),
        }
    }

    pub fn arch(&self) -> &str {
        self.arch
    }

    /// The architecture's own hyperparameters (`<arch>.*` metadata).
    pub fn hparams(&self) -> crate::config::Hparams<'f> {
        crate::config::Hparams::new(self.file, self.arch)
    }

    /// Marks a tensor the architecture knowingly does not use (present in some files, no
    /// effect on the result), so that it does not count as unclaimed.
    pub fn ignore(&self, name: &str) {
        if let Some(idx) = self.index(name) {
            self.claimed.borrow_mut()[idx] = true;
        }
    }

    /// Refuses a file whose tensors the architecture did not all use: such a tensor means the
    /// file needs a feature hearth would otherwise silently drop (Llama 3.1's `rope_freqs`,
    /// biases, an extra norm).
    pub fn check_all_claimed(&self) -> Result<(), EngineError> {
        let claimed = self.claimed.borrow();
        let names: Vec<&str> = self
            .file
            .tensors()
            .iter()
            .zip(claimed.iter())
            .filter(|(_, &c)| !c)
            .map(|(t, _)| t.name.as_str())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        const SHOWN: usize = 8;
        let mut list = names[..names.len().min(SHOWN)].join(", ");
        if names.len() > SHOWN {
            list.push_str(&format!(" and {} more", names.len() - SHOWN));
        }
        Err(EngineError::UnclaimedTensors {
            arch: self.arch.to_string(),
            names: list,
        })
    }

    /// A loader whose matrices come back unprepared while it notes the ones to prepare.
    pub fn recording(file: &'f GgufFile, arch: &'f str, backend: &'f dyn Backend) -> Self {
        let t = TensorLoader::new(file, arch, backend);
        *t.wanted.borrow_mut() = Some(Vec::new());
        t
    }

    /// Prepares every matrix noted while recording, all in one pass over the file, and stops
    /// recording: later requests for them get the prepared copies.
    pub fn prepare_recorded(&self) -> Result<(), EngineError> {
        let wanted = self.wanted.borrow_mut().take();
        wanted.map_or(Ok(()), |w| self.prepare_tensors(&w))
    }

    /// Has the backend prepare the matrices not prepared yet, in one call; it reads slices of
    /// rows through the file.
    fn prepare_tensors(&self, wanted: &[Wanted]) -> Result<(), EngineError> {
        let infos = self.file.tensors();
        let mut todo: Vec<Wanted> = Vec::new();
        for w in wanted {
            if !todo.contains(w) && !self.prepared.borrow().contains_key(&(w.idx, w.row0)) {
                todo.push(*w);
            }
        }
        let jobs: Vec<WeightJob> = todo
            .iter()
            .map(|w| WeightJob {
                ty: infos[w.idx].ty,
                rows: w.rows,
                cols: w.cols,
            })
            .collect();
        // Row sizes from the type: a checked tensor's row is a whole number of blocks.
        let row_bytes: Vec<u64> = jobs
            .iter()
            .map(|j| (j.cols / j.ty.block_size().max(1) * j.ty.block_bytes()) as u64)
            .collect();
        let read = |m: usize, first_row: usize, buf: &mut [u8]| {
            let w = todo[m];
            let offset = (w.row0 + first_row) as u64 * row_bytes[m];
            self.file.read_tensor_bytes(&infos[w.idx], offset, buf)
        };
        let prepared = self
            .backend
            .prepare_weights(&jobs, &read)
            .map_err(|(m, e)| EngineError::TensorRead {
                name: infos[todo[m].idx].name.clone(),
                source: e,
            })?;
        let mut cache = self.prepared.borrow_mut();
        for (w, p) in todo.into_iter().zip(prepared) {
            if let Some(p) = p {
                cache.insert((w.idx, w.row0), p);
            }
        }
        Ok(())
    }

    /// The backend's copy of a checked matrix, made on first use (unless recording); `None`
    /// where the backend reads the mapping as it is.
    fn prepare(&self, w: Wanted) -> Result<Option<PreparedWeight>, EngineError> {
        let info = &self.file.tensors()[w.idx];
        if !self.backend.prepares(info.ty, w.rows, w.cols) {
            return Ok(None);
        }
        if let Some(wanted) = self.wanted.borrow_mut().as_mut() {
            wanted.push(w);
            return Ok(None);
        }
        self.prepare_tensors(&[w])?;
        Ok(self.prepared.borrow().get(&(w.idx, w.row0)).cloned())
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.file.tensors().iter().position(|t| t.name == name)
    }

    /// The index of a tensor the architecture uses (marked as claimed).
    fn claim(&self, name: &str) -> Result<usize, EngineError> {
        let idx = self.index(name).ok_or_else(|| self.missing(name))?;
        self.claimed.borrow_mut()[idx] = true;
        Ok(idx)
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

    /// A `rows × cols` weight matrix (GGUF dims `[cols, rows]`) for products, prepared where
    /// the backend makes its own copy.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Mat, EngineError> {
        let mut m = self.table(name, rows, cols)?;
        m.prepared = self.prepare(Wanted {
            idx: m.tensor,
            row0: 0,
            rows,
            cols,
        })?;
        Ok(m)
    }

    /// The `n_expert` matrices of a 3-D expert tensor (GGUF dims `[cols, rows, n_expert]`),
    /// each a `rows × cols` slice, prepared like any matrix.
    pub fn experts(
        &self,
        name: &str,
        n_expert: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Mat>, EngineError> {
        let idx = self.claim(name)?;
        let info = &self.file.tensors()[idx];
        let expected = [cols as u64, rows as u64, n_expert as u64];
        if info.dims != expected {
            return Err(EngineError::BadTensorShape {
                name: name.to_string(),
                found: info.dims.clone(),
                expected: expected.to_vec(),
            });
        }
        self.check_type(name, info.ty)?;
        (0..n_expert)
            .map(|e| {
                let row0 = e * rows;
                Ok(Mat {
                    ty: info.ty,
                    rows,
                    cols,
                    tensor: idx,
                    row0,
                    prepared: self.prepare(Wanted {
                        idx,
                        row0,
                        rows,
                        cols,
                    })?,
                })
            })
            .collect()
    }

    fn check_type(&self, name: &str, ty: GgmlType) -> Result<(), EngineError> {
        if kernels::quant::format(ty).is_none() {
            return Err(EngineError::UnsupportedTensorType {
                name: name.to_string(),
                ty,
            });
        }
        Ok(())
    }

    /// A `rows × cols` matrix read by rows in place (an embedding table), never prepared.
    pub fn table(&self, name: &str, rows: usize, cols: usize) -> Result<Mat, EngineError> {
        let idx = self.claim(name)?;
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
        self.check_type(name, info.ty)?;
        Ok(Mat {
            ty: info.ty,
            rows,
            cols,
            tensor: idx,
            row0: 0,
            prepared: None,
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
        self.floats(name, &[len as u64])
    }

    /// A small `rows × cols` tensor (GGUF dims `[cols, rows]`) dequantized to f32, row-major:
    /// per-expert biases.
    pub fn float_rows(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f32>, EngineError> {
        self.floats(name, &[cols as u64, rows as u64])
    }

    fn floats(&self, name: &str, dims: &[u64]) -> Result<Vec<f32>, EngineError> {
        let idx = self.claim(name)?;
        let info = &self.file.tensors()[idx];
        let dims_ok = info.dims.len() >= dims.len()
            && info.dims[..dims.len()] == *dims
            && info.dims[dims.len()..].iter().all(|&d| d == 1);
        if !dims_ok {
            return Err(EngineError::BadTensorShape {
                name: name.to_string(),
                found: info.dims.clone(),
                expected: dims.to_vec(),
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
        let len = dims.iter().product::<u64>() as usize;
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
