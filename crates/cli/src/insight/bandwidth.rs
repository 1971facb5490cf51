//! How fast this machine reads memory (`hearth hw --bandwidth`, `hearth bench --bandwidth`):
//! the ceiling of generation, which reads every weight once per token.

use anyhow::{bail, Context};
use kernels::membw::{read_bandwidth, MIN_PROBE_BYTES};
use kernels::pool::ThreadPool;
use serde::Serialize;

/// The probe's buffer: far larger than any CPU's last-level cache.
const PROBE_BYTES: usize = 512 << 20;
/// Passes over it; the best counts.
const PASSES: usize = 5;

#[derive(Serialize, Clone, Copy, Debug)]
pub struct MemoryRead {
    pub threads: usize,
    pub bytes_per_second: f64,
    pub buffer_bytes: usize,
}

/// The read rate of `threads` threads together, over a buffer of 512 MiB (less when memory is
/// short, never less than the caches hold).
pub fn probe(threads: usize) -> anyhow::Result<MemoryRead> {
    let available = super::system::memory().available_bytes;
    let buffer_bytes = buffer_for(available)?;
    let pool = ThreadPool::new(threads);
    let bytes_per_second =
        read_bandwidth(&pool, buffer_bytes, PASSES).context("measuring how fast memory reads")?;
    Ok(MemoryRead {
        threads: pool.n_threads(),
        bytes_per_second,
        buffer_bytes,
    })
}

/// The probe's buffer size given the available memory (a quarter of it at most).
fn buffer_for(available: Option<u64>) -> anyhow::Result<usize> {
    let cap = available.map_or(PROBE_BYTES, |a| {
        usize::try_from(a / 4).unwrap_or(usize::MAX)
    });
    let bytes = PROBE_BYTES.min(cap);
    if bytes < MIN_PROBE_BYTES {
        bail!(
            "too little free memory to measure its speed: the probe needs {} MiB, a quarter \
             of what is available",
            MIN_PROBE_BYTES >> 20
        );
    }
    Ok(bytes)
}

/// `29.81 GB/s` (decimal gigabytes, as memory bandwidth is quoted).
pub fn rate_text(bytes_per_second: f64) -> String {
    format!("{:.1} GB/s", bytes_per_second / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_shrinks_with_free_memory_and_refuses_too_little() {
        assert_eq!(buffer_for(None).unwrap(), PROBE_BYTES);
        assert_eq!(buffer_for(Some(64 << 30)).unwrap(), PROBE_BYTES);
        assert_eq!(buffer_for(Some(1 << 30)).unwrap(), 256 << 20);
        let err = buffer_for(Some(100 << 20)).unwrap_err().to_string();
        assert!(err.contains("too little free memory"), "{err}");
    }

    #[test]
    fn rates_in_decimal_gigabytes() {
        assert_eq!(rate_text(29.81e9), "29.8 GB/s");
    }
}
