//! How fast this machine reads memory. A decode step streams every weight once per token, so
//! for a model much larger than the caches, tokens per second can never exceed this rate
//! divided by the bytes of weights a step reads: the probe turns "is 35 tokens/s good?" into
//! a fraction of what the hardware allows.
//!
//! The buffer is in 2 MiB pages where Linux gives them (as packed weights are), each thread
//! touches its own share first (so the pages sit near it on a NUMA machine), and each pass
//! sums the buffer on every thread of the pool; the best pass counts, as on a shared machine
//! others' load only ever slows a pass down.

use crate::packed::bytes::PackedBytes;
use crate::pool::{split_range, ThreadPool};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The smallest buffer the probe reads: larger than the last-level caches of most CPUs it
/// would otherwise measure instead of memory.
pub const MIN_PROBE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "a memory-bandwidth probe needs at least {MIN_PROBE_BYTES} bytes (more than the \
         caches hold), not {0}"
    )]
    TooSmall(usize),
    #[error("a memory-bandwidth probe needs at least one pass")]
    NoPasses,
    #[error("{0} bytes for the memory-bandwidth probe could not be allocated: free memory or probe less")]
    OutOfMemory(usize),
}

/// Bytes per second that the pool's threads together read from a buffer of `bytes` bytes:
/// the best of `passes` passes over it.
pub fn read_bandwidth(pool: &ThreadPool, bytes: usize, passes: usize) -> Result<f64, ProbeError> {
    if bytes < MIN_PROBE_BYTES {
        return Err(ProbeError::TooSmall(bytes));
    }
    if passes == 0 {
        return Err(ProbeError::NoPasses);
    }
    let mut buf = PackedBytes::zeroed(bytes).ok_or(ProbeError::OutOfMemory(bytes))?;
    let base = SharedBytes(buf.as_mut_ptr());
    // First touch on the threads that will read each share.
    pool.run(&|i, n| {
        let share = share_of(bytes, i, n);
        // SAFETY: the shares of the pool's threads are disjoint ranges inside the buffer,
        // which outlives `run`; each thread writes only its own.
        let mine = unsafe { std::slice::from_raw_parts_mut(base.at(share.start), share.len()) };
        for (k, b) in mine.iter_mut().enumerate() {
            *b = k as u8;
        }
    });
    let buf = &*buf;
    let sink = AtomicU64::new(0);
    let mut best = f64::INFINITY;
    for _ in 0..passes {
        let start = Instant::now();
        pool.run(&|i, n| {
            let sum = sum_words(&buf[share_of(bytes, i, n)]);
            sink.fetch_xor(sum, Ordering::Relaxed);
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink.load(Ordering::Relaxed));
    Ok(bytes as f64 / best.max(1e-9))
}

/// Thread `i`'s share of `len` bytes among `n`, in whole cache lines.
fn share_of(len: usize, i: usize, n: usize) -> std::ops::Range<usize> {
    let lines = split_range(len / 64, i, n);
    let end = if i + 1 == n { len } else { lines.end * 64 };
    lines.start * 64..end
}

/// The buffer's address for the first-touch pass, which writes disjoint shares of it from
/// the pool's threads.
#[derive(Clone, Copy)]
struct SharedBytes(*mut u8);

impl SharedBytes {
    /// The address `offset` bytes in (a method, so that closures capture the whole value).
    fn at(self, offset: usize) -> *mut u8 {
        self.0.wrapping_add(offset)
    }
}
// SAFETY: only used to hand disjoint ranges of one live buffer to the pool's threads.
unsafe impl Send for SharedBytes {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedBytes {}

/// A checksum of `bytes` read as 64-bit words in eight independent sums, so that loads, not
/// one chain of additions, set the pace.
fn sum_words(bytes: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    let mut lines = bytes.chunks_exact(64);
    for line in &mut lines {
        for (a, w) in acc.iter_mut().zip(line.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            *a = a.wrapping_add(u64::from_ne_bytes(word));
        }
    }
    let tail: u64 = lines.remainder().iter().map(|&b| u64::from(b)).sum();
    acc.iter().fold(tail, |s, &a| s.wrapping_add(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_byte() {
        let bytes: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        let words: u64 = bytes[..192]
            .chunks_exact(8)
            .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
            .fold(0, u64::wrapping_add);
        let tail: u64 = bytes[192..].iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum_words(&bytes), words.wrapping_add(tail));
    }

    #[test]
    fn shares_cover_the_buffer_in_lines() {
        for (len, n) in [(1000, 3), (64 * 7, 2), (63, 4), (4096, 1)] {
            let mut next = 0;
            for i in 0..n {
                let s = share_of(len, i, n);
                assert_eq!(s.start, next);
                assert_eq!(s.start % 64, 0);
                next = s.end;
            }
            assert_eq!(next, len);
        }
    }

    #[test]
    fn measures_a_positive_rate_and_refuses_bad_sizes() {
        let pool = ThreadPool::new(2);
        let rate = read_bandwidth(&pool, MIN_PROBE_BYTES, 1).unwrap();
        assert!(rate.is_finite() && rate > 1e8, "{rate} bytes/s");
        assert!(matches!(
            read_bandwidth(&pool, 4096, 3),
            Err(ProbeError::TooSmall(4096))
        ));
        assert!(matches!(
            read_bandwidth(&pool, MIN_PROBE_BYTES, 0),
            Err(ProbeError::NoPasses)
        ));
        assert!(matches!(
            read_bandwidth(&pool, usize::MAX / 2, 1),
            Err(ProbeError::OutOfMemory(_))
        ));
    }
}
