//! Per-sequence key/value cache: for each layer, keys and values of every position so far,
//! stored as f16 (as llama.cpp stores them by default: half the memory of f32).

use gguf::GgmlType;

/// Keys and values for one sequence. Rows are positions; each row holds all KV heads.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    n_ctx: usize,
    k_row: usize,
    v_row: usize,
}

#[derive(Debug)]
struct LayerKv {
    /// f16 little-endian bytes, `n_ctx × k_row` elements.
    k: Vec<u8>,
    v: Vec<u8>,
}

/// Bytes per cached element.
const ELEM: usize = 2;

impl KvCache {
    /// Room for `n_ctx` positions. Memory is reserved up front but zero pages are not touched
    /// until used, so resident memory grows with the positions actually filled.
    pub fn new(n_layer: usize, n_ctx: usize, k_row: usize, v_row: usize) -> KvCache {
        let layers = (0..n_layer)
            .map(|_| LayerKv {
                k: vec![0; n_ctx * k_row * ELEM],
                v: vec![0; n_ctx * v_row * ELEM],
            })
            .collect();
        KvCache {
            layers,
            n_ctx,
            k_row,
            v_row,
        }
    }

    /// The element type of cached rows.
    pub fn elem_type(&self) -> GgmlType {
        GgmlType::F16
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Whether the cache was made for this many layers and row sizes.
    pub fn has_shape(&self, n_layer: usize, k_row: usize, v_row: usize) -> bool {
        self.layers.len() == n_layer && self.k_row == k_row && self.v_row == v_row
    }

    /// Bytes the cache takes when full.
    pub fn bytes(&self) -> usize {
        self.layers.len() * self.n_ctx * (self.k_row + self.v_row) * ELEM
    }

    /// Stores rows of keys and values (f32, converted to f16) starting at position `pos`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let l = &mut self.layers[layer];
        let k_start = pos * self.k_row * ELEM;
        kernels::ops::f16::from_f32(k, &mut l.k[k_start..k_start + k.len() * ELEM]);
        let v_start = pos * self.v_row * ELEM;
        kernels::ops::f16::from_f32(v, &mut l.v[v_start..v_start + v.len() * ELEM]);
    }

    /// Key bytes of `layer` for positions `0..len`, one row of `k_row` f16 values per position.
    pub fn keys(&self, layer: usize, len: usize) -> &[u8] {
        &self.layers[layer].k[..len * self.k_row * ELEM]
    }

    pub fn values(&self, layer: usize, len: usize) -> &[u8] {
        &self.layers[layer].v[..len * self.v_row * ELEM]
    }
}
