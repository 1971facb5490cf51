//! Per-sequence key/value cache: for each layer, keys and values of every position so far.
//! The storage belongs to the backend that made it ([`crate::backend::Backend::alloc_kv`]);
//! this is its shape and the handle.

use crate::backend::KvStorage;
use gguf::GgmlType;
use std::any::Any;

/// Keys and values for one sequence. Rows are positions; each row holds all KV heads.
pub struct KvCache {
    storage: Box<dyn KvStorage>,
    elem: GgmlType,
    n_layer: usize,
    n_ctx: usize,
    k_row: usize,
    v_row: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("elem", &self.elem)
            .field("n_layer", &self.n_layer)
            .field("n_ctx", &self.n_ctx)
            .field("k_row", &self.k_row)
            .field("v_row", &self.v_row)
            .finish_non_exhaustive()
    }
}

impl KvCache {
    /// A cache of `n_ctx` positions of `n_layer` layers held in `storage`, whose elements are
    /// `elem` (for backends: see [`crate::backend::Backend::alloc_kv`]).
    pub fn new(
        storage: Box<dyn KvStorage>,
        elem: GgmlType,
        n_layer: usize,
        n_ctx: usize,
        k_row: usize,
        v_row: usize,
    ) -> KvCache {
        KvCache {
            storage,
            elem,
            n_layer,
            n_ctx,
            k_row,
            v_row,
        }
    }

    /// The element type of cached rows.
    pub fn elem_type(&self) -> GgmlType {
        self.elem
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Elements of one position's keys (every KV head) and values.
    pub fn k_row(&self) -> usize {
        self.k_row
    }
    pub fn v_row(&self) -> usize {
        self.v_row
    }

    /// Whether the cache was made for this many layers and row sizes.
    pub fn has_shape(&self, n_layer: usize, k_row: usize, v_row: usize) -> bool {
        self.n_layer == n_layer && self.k_row == k_row && self.v_row == v_row
    }

    /// Bytes the cache takes when full.
    pub fn bytes(&self) -> usize {
        let elem = self.elem.block_bytes() / self.elem.block_size().max(1);
        self.n_layer * self.n_ctx * (self.k_row + self.v_row) * elem
    }

    /// The backend's storage, if it is a `T` (a backend asks for its own type).
    pub fn storage<T: Any>(&self) -> Option<&T> {
        (&*self.storage as &dyn Any).downcast_ref()
    }

    pub fn storage_mut<T: Any>(&mut self) -> Option<&mut T> {
        (&mut *self.storage as &mut dyn Any).downcast_mut()
    }
}
