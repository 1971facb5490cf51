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
}
