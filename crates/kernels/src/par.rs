//! Safe parallel iteration over disjoint mutable chunks of a buffer, for code outside this
//! crate (which may not use `unsafe`).

use crate::pool::ThreadPool;
use std::sync::atomic::{AtomicUsize, Ordering};

struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    // A method (not field access) so closures capture the whole Sync wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: chunks handed out through the pointer are disjoint (see `par_chunks_mut`).
unsafe impl<T: Send> Sync for SendPtr<T> {}
unsafe impl<T: Send> Send for SendPtr<T> {}

/// Below this many elements a row-wise op runs on the calling thread: waking the pool would
/// cost about as much as the work (a decode step's few rows).
const PAR_MIN_ELEMS: usize = 16 * 1024;

/// Rows per chunk for spreading a row-wise op over `rows` rows of `row_len` elements on the
/// pool (a few chunks per thread, so that a slow thread does not hold the rest), or `None`
/// where the op is better run on the calling thread.
pub fn rows_per_chunk(pool: &ThreadPool, rows: usize, row_len: usize) -> Option<usize> {
    let n = pool.n_threads();
    if n == 1 || rows < 2 || rows.saturating_mul(row_len) < PAR_MIN_ELEMS {
        return None;
    }
    Some(rows.div_ceil(4 * n))
}

/// Calls `f(index, chunk)` for every `chunk_len`-sized chunk of `data` (the last may be
/// shorter), spread over the pool's threads, each chunk exactly once.
pub fn par_chunks_mut<T: Send>(
    pool: &ThreadPool,
    data: &mut [T],
    chunk_len: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    par_chunks_mut_on(pool, data, chunk_len, &|_, i, chunk| f(i, chunk));
}

/// [`par_chunks_mut`] that also tells `f` which thread runs it: `f(thread, index, chunk)`
/// with `thread < pool.n_threads()` and no two concurrent calls on one `thread`, so the
/// caller can hand each thread its own scratch space (sized up front, so that no thread
/// allocates on first use).
pub fn par_chunks_mut_on<T: Send>(
    pool: &ThreadPool,
    data: &mut [T],
    chunk_len: usize,
    f: &(dyn Fn(usize, usize, &mut [T]) + Sync),
) {
    let chunk_len = chunk_len.max(1);
    let len = data.len();
    let n_chunks = len.div_ceil(chunk_len);
    if pool.n_threads() == 1 || n_chunks <= 1 {
        for (i, c) in data.chunks_mut(chunk_len).enumerate() {
            f(0, i, c);
        }
        return;
    }
    let next = AtomicUsize::new(0);
    let ptr = SendPtr(data.as_mut_ptr());
    pool.run(&|thread, _| {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n_chunks {
                break;
            }
            let start = i * chunk_len;
            let end = (start + chunk_len).min(len);
            // SAFETY: `start..end` lies within `data` (i < n_chunks), each index `i` is claimed
            // by exactly one thread through the counter, so the chunks are disjoint, and `data`
            // stays mutably borrowed until `run` returns.
            let chunk =
                unsafe { std::slice::from_raw_parts_mut(ptr.get().add(start), end - start) };
            f(thread, i, chunk);
        }
    });
}

/// What [`par_zip_chunks_mut`] calls: `f(index, a_part, b_part)`.
pub type ZipChunkFn<'f, A, B> = dyn Fn(usize, &mut [A], &mut [B]) + Sync + 'f;

/// Like [`par_chunks_mut`] over two buffers in step: chunk `i` of `a` (`a_chunk` long) goes
/// with chunk `i` of `b` (`b_chunk` long), as `f(i, a_part, b_part)`. The buffers must hold the
/// same number of chunks (the last of each may be shorter); panics otherwise.
pub fn par_zip_chunks_mut<A: Send, B: Send>(
    pool: &ThreadPool,
    a: &mut [A],
    a_chunk: usize,
    b: &mut [B],
    b_chunk: usize,
    f: &ZipChunkFn<'_, A, B>,
) {
    let (a_chunk, b_chunk) = (a_chunk.max(1), b_chunk.max(1));
    let n_chunks = a.len().div_ceil(a_chunk);
    assert_eq!(
        n_chunks,
        b.len().div_ceil(b_chunk),
        "{} and {} elements in chunks of {a_chunk} and {b_chunk}",
        a.len(),
        b.len()
    );
    if pool.n_threads() == 1 || n_chunks <= 1 {
        for (i, (x, y)) in a.chunks_mut(a_chunk).zip(b.chunks_mut(b_chunk)).enumerate() {
            f(i, x, y);
        }
        return;
    }
    let (a_len, b_len) = (a.len(), b.len());
    let next = AtomicUsize::new(0);
    let (pa, pb) = (SendPtr(a.as_mut_ptr()), SendPtr(b.as_mut_ptr()));
    pool.run(&|_, _| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n_chunks {
            break;
        }
        let (a0, b0) = (i * a_chunk, i * b_chunk);
        let (a1, b1) = ((a0 + a_chunk).min(a_len), (b0 + b_chunk).min(b_len));
        // SAFETY: as in `par_chunks_mut_on`: index `i` is claimed once through the counter, so
        // the chunks of each buffer are disjoint and lie within it (both hold `n_chunks`
        // chunks), and both buffers stay mutably borrowed until `run` returns.
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts_mut(pa.get().add(a0), a1 - a0),
                std::slice::from_raw_parts_mut(pb.get().add(b0), b1 - b0),
            )
        };
        f(i, x, y);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_told_apart() {
        for threads in [1, 2, 4] {
            let pool = ThreadPool::new(threads);
            let busy: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            let mut v = vec![usize::MAX; 64];
            par_chunks_mut_on(&pool, &mut v, 1, &|thread, _, c| {
                assert!(thread < threads, "thread {thread} of {threads}");
                assert_eq!(
                    busy[thread].fetch_add(1, Ordering::SeqCst),
                    0,
                    "thread {thread} twice at once"
                );
                c[0] = thread;
                std::thread::yield_now();
                busy[thread].fetch_sub(1, Ordering::SeqCst);
            });
            assert!(v.iter().all(|&t| t < threads));
        }
    }

    #[test]
    fn every_chunk_once() {
        for threads in [1, 3] {
            let pool = ThreadPool::new(threads);
            let mut v = vec![0usize; 103];
            par_chunks_mut(&pool, &mut v, 10, &|i, c| {
                for x in c.iter_mut() {
                    *x += i + 1;
                }
            });
            for (j, x) in v.iter().enumerate() {
                assert_eq!(*x, j / 10 + 1);
            }
        }
    }

    #[test]
    fn zipped_chunks_go_together() {
        for threads in [1, 3] {
            let pool = ThreadPool::new(threads);
            let mut a = vec![0usize; 95];
            let mut b = vec![0usize; 29];
            par_zip_chunks_mut(&pool, &mut a, 10, &mut b, 3, &|i, x, y| {
                x.iter_mut().for_each(|v| *v = i + 1);
                y.iter_mut().for_each(|v| *v = i + 1);
            });
            assert!(a.iter().enumerate().all(|(j, &v)| v == j / 10 + 1));
            assert!(b.iter().enumerate().all(|(j, &v)| v == j / 3 + 1));
        }
    }

    #[test]
    #[should_panic(expected = "in chunks of")]
    fn zipped_chunks_must_pair_up() {
        let pool = ThreadPool::new(2);
        let (mut a, mut b) = (vec![0u8; 20], vec![0u8; 3]);
        par_zip_chunks_mut(&pool, &mut a, 10, &mut b, 1, &|_, _, _| {});
    }
}
