//! A persistent thread pool with a cheap dispatch, for the data-parallel loops of a forward pass
//! (one dispatch per matrix product, hundreds per token).
//!
//! [`ThreadPool::run`] calls `f(thread_index, n_threads)` on every thread of the pool, the
//! calling thread taking index 0, and returns once every call has returned. Between dispatches
//! the workers spin for a short while (a forward pass dispatches again within microseconds),
//! then poll while yielding their core, then sleep on a condition variable.
//!
//! A panic in `f` on any thread is caught, the other threads are waited for, and the panic is
//! resumed on the calling thread: no deadlock, no dangling job. A `run` that finds the pool busy
//! (called from inside `f`, or from a second thread at the same time) runs `f(0, 1)` on its own
//! thread instead of waiting.

use std::any::Any;
use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;

/// A waiting thread first polls this many times with a `pause` in between (some tens of
/// nanoseconds each)...
const SPIN_POLLS: u32 = 256;
/// ...then this many times yielding its core in between (so that an oversubscribed machine
/// still runs the threads that have work), then sleeps on a condition variable.
const YIELD_POLLS: u32 = 2048;

/// Polls `done` as described for [`SPIN_POLLS`] and [`YIELD_POLLS`]; false if it never held.
#[inline]
fn poll(mut done: impl FnMut() -> bool) -> bool {
    for i in 0..SPIN_POLLS + YIELD_POLLS {
        if done() {
            return true;
        }
        if i < SPIN_POLLS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    false
}

/// The job of the current dispatch, its lifetime erased: only dereferenced by workers between the
/// epoch bump that publishes it and their decrement of `remaining`, while `run` (which owns the
/// borrow) waits for `remaining` to reach zero.
type Job = *const (dyn Fn(usize, usize) + Sync + 'static);

type Payload = Box<dyn Any + Send + 'static>;

struct Shared {
    /// Threads taking part in a dispatch, the caller included.
    n_threads: AtomicUsize,
    /// Bumped by each dispatch (and by shutdown); workers run the job once per new value.
    epoch: AtomicUsize,
    /// Written by `run` before the epoch bump, read by workers after they see it.
    job: UnsafeCell<Option<Job>>,
    /// Workers that have not yet finished the current job.
    remaining: AtomicUsize,
    shutdown: AtomicBool,
    /// Workers asleep (or about to sleep) on `wake`.
    sleepers: AtomicUsize,
    /// Whether the caller is asleep (or about to sleep) on `done`.
    caller_sleeping: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    done: Condvar,
    /// The first panic of a worker during the current job.
    panic: Mutex<Option<Payload>>,
}

// SAFETY: every field but `job` is Sync. `job` is written only by the thread holding the pool's
// dispatch lock, while no worker reads it (before the epoch bump that publishes it, and after all
// workers have reported done); workers only read it in between. The `Job` it points to is `Sync`
// and outlives every access (see `ThreadPool::run`).
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only a borrow handed between threads under that protocol.
unsafe impl Send for Shared {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Waits until the epoch differs from `seen` and returns it.
    fn wait_epoch(&self, seen: usize) -> usize {
        let mut e = seen;
        if poll(|| {
            e = self.epoch.load(Ordering::Acquire);
            e != seen
        }) {
            return e;
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut guard = lock(&self.lock);
        let e = loop {
            let e = self.epoch.load(Ordering::SeqCst);
            if e != seen {
                break e;
            }
            guard = self
                .wake
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        };
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        e
    }

    /// Bumps the epoch and wakes sleeping workers.
    fn publish(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&self.lock);
            self.wake.notify_all();
        }
    }

    /// Waits until every worker has finished the current job.
    fn wait_done(&self) {
        if poll(|| self.remaining.load(Ordering::Acquire) == 0) {
            return;
        }
        self.caller_sleeping.store(true, Ordering::SeqCst);
        let mut guard = lock(&self.lock);
        while self.remaining.load(Ordering::SeqCst) != 0 {
            guard = self
                .done
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(guard);
        self.caller_sleeping.store(false, Ordering::SeqCst);
    }

    fn worker(&self, index: usize) {
        let mut seen = 0;
        loop {
            seen = self.wait_epoch(seen);
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            // SAFETY: the epoch bump we just observed (acquire) published the job, and `run`
            // keeps it alive and unchanged until we decrement `remaining` below.
            if let Some(job) = unsafe { *self.job.get() } {
                let n = self.n_threads.load(Ordering::Relaxed);
                // SAFETY: as above; the pointee is `Sync`.
                let f = unsafe { &*job };
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(index, n))) {
                    lock(&self.panic).get_or_insert(p);
                }
            }
            if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1
                && self.caller_sleeping.load(Ordering::SeqCst)
            {
                let _guard = lock(&self.lock);
                self.done.notify_all();
            }
        }
    }
}

/// A fixed set of worker threads; see the module documentation.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held for the whole of a dispatch.
    dispatch: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` threads counting the caller (`n_threads - 1` workers are spawned;
    /// 0 counts as 1). If the system refuses to spawn a thread the pool is smaller: see
    /// [`ThreadPool::n_threads`].
    pub fn new(n_threads: usize) -> Self {
        let shared = Arc::new(Shared {
            n_threads: AtomicUsize::new(1),
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            remaining: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            caller_sleeping: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            done: Condvar::new(),
            panic: Mutex::new(None),
        });
        let mut workers = Vec::new();
        for index in 1..n_threads.max(1) {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("hearth-worker-{index}"))
                .spawn(move || s.worker(index));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(_) => break,
            }
        }
        shared.n_threads.store(workers.len() + 1, Ordering::SeqCst);
        ThreadPool {
            shared,
            workers,
            dispatch: Mutex::new(()),
        }
    }

    /// Threads taking part in a dispatch, the caller included.
    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(thread_index, n_threads)` once on each thread of the pool (the caller is index
    /// 0) and returns when all calls have returned. A panic in any call is resumed here after
    /// all threads have finished. If the pool is already running a job (a nested or concurrent
    /// call), runs `f(0, 1)` on the calling thread instead.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.n_threads();
        if n == 1 {
            return f(0, 1);
        }
        let _dispatch = match self.dispatch.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return f(0, 1),
        };
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased. The pointer is dereferenced by workers only until
        // they decrement `remaining`, and we do not return (nor unwind) before `remaining` is 0:
        // the caller's own call is wrapped in `catch_unwind`, and `wait_done` cannot panic.
        let job: Job = unsafe {
            std::mem::transmute::<
                &(dyn Fn(usize, usize) + Sync + '_),
                &'static (dyn Fn(usize, usize) + Sync + 'static),
            >(f)
        };
        s.remaining.store(n - 1, Ordering::SeqCst);
        // SAFETY: we hold the dispatch lock and every worker has finished the previous job
        // (remaining was 0), so nobody reads the cell now.
        unsafe { *s.job.get() = Some(job) };
        s.publish();
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, n)));
        s.wait_done();
        // SAFETY: every worker is done with the job; we still hold the dispatch lock.
        unsafe { *s.job.get() = None };
        let theirs = lock(&s.panic).take();
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = theirs {
            resume_unwind(p);
        }
    }

    /// Splits `0..len` into one contiguous range per thread (see [`split_range`]) and calls
    /// `f(range)` for each non-empty range in parallel.
    pub fn parallel_for(&self, len: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        self.run(&|i, n| {
            let r = split_range(len, i, n);
            if !r.is_empty() {
                f(r)
            }
        });
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.publish();
        for w in self.workers.drain(..) {
            // Workers catch the panics of jobs; a join error would only repeat one.
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.n_threads())
            .finish()
    }
}

/// The `idx`-th of `n` contiguous, nearly equal parts of `0..len` (the first `len % n` parts
/// are one longer). Empty for `idx >= n`; `n == 0` counts as 1.
pub fn split_range(len: usize, idx: usize, n: usize) -> Range<usize> {
    let n = n.max(1);
    if idx >= n {
        return len..len;
    }
    let (base, extra) = (len / n, len % n);
    let start = idx * base + idx.min(extra);
    start..start + base + usize::from(idx < extra)
}

/// How much lower than the decode threads background work runs (a Linux nice value: each step
/// is about 1.25× less CPU share, so +10 gets about a tenth of a contended core).
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority, so that background work (loading a model,
/// preparing a request) takes the cores only when the threads that decode running streams leave
/// them idle. Threads it starts afterwards inherit the lower priority. Where the platform has
/// no per-thread priority (or refuses), nothing changes: the work only competes as before.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: nice() takes an integer and changes only the calling thread's nice value on
    // Linux (relative, capped at 19); a failure is harmless and leaves it as it was.
    unsafe {
        libc::nice(BACKGROUND_NICE);
    }
}

#[cfg(test)]
mod tests {

    #[cfg(target_os = "linux")]
    fn own_nice() -> i32 {
        // SAFETY: plain integer arguments; errno is irrelevant for a thread that exists.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_lowered_thread_and_the_threads_it_starts_run_at_background_priority() {
        let before = own_nice();
        let (own, child) = std::thread::spawn(|| {
            lower_thread_priority();
            let child = std::thread::spawn(own_nice).join().unwrap();
            (own_nice(), child)
        })
        .join()
        .unwrap();
        // Raising the priority back needs privileges; lowering never does (capped at 19).
        let expected = (before + BACKGROUND_NICE).min(19);
        assert_eq!((own, child), (expected, expected));
        assert_eq!(
            own_nice(),
            before,
            "the caller's own thread keeps its priority"
        );
    }
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn split_covers_everything() {
        for len in [0, 1, 5, 7, 64, 1000] {
            for n in 1..9 {
                let mut next = 0;
                for i in 0..n {
                    let r = split_range(len, i, n);
                    assert_eq!(r.start, next);
                    assert!(r.len() <= len / n + 1);
                    next = r.end;
                }
                assert_eq!(next, len);
                assert!(split_range(len, n, n).is_empty());
            }
        }
        assert_eq!(split_range(10, 0, 0), 0..10);
    }

    #[test]
    fn every_thread_runs_once_per_dispatch() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            assert_eq!(pool.n_threads(), threads);
            for round in 0..300u64 {
                let seen = AtomicU64::new(0);
                pool.run(&|i, n| {
                    assert_eq!(n, threads);
                    seen.fetch_add(1 << (8 * i), Ordering::Relaxed);
                    let _ = round;
                });
                let expected: u64 = (0..threads).map(|i| 1u64 << (8 * i)).sum();
                assert_eq!(seen.load(Ordering::Relaxed), expected);
            }
        }
    }

    #[test]
    fn sleeping_workers_wake_up() {
        let pool = ThreadPool::new(3);
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let count = AtomicUsize::new(0);
            pool.run(&|_, _| {
                count.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(count.load(Ordering::Relaxed), 3);
        }
    }

    #[test]
    fn parallel_for_writes_disjoint_parts() {
        let pool = ThreadPool::new(3);
        let data: Vec<AtomicUsize> = (0..1001).map(|_| AtomicUsize::new(0)).collect();
        pool.parallel_for(data.len(), &|r| {
            for i in r {
                data[i].fetch_add(i, Ordering::Relaxed);
            }
        });
        assert!(data
            .iter()
            .enumerate()
            .all(|(i, v)| v.load(Ordering::Relaxed) == i));
    }

    #[test]
    fn nested_run_is_serial() {
        let pool = ThreadPool::new(2);
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            pool.run(&|i, n| {
                assert_eq!((i, n), (0, 1));
                count.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn panics_propagate_and_pool_survives() {
        let pool = ThreadPool::new(3);
        for culprit in [0, 2] {
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run(&|i, _| {
                    if i == culprit {
                        panic!("boom {i}");
                    }
                })
            }));
            let msg = r.err().and_then(|p| p.downcast_ref::<String>().cloned());
            assert_eq!(msg.as_deref(), Some(format!("boom {culprit}").as_str()));
        }
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn concurrent_callers() {
        let pool = ThreadPool::new(3);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let done = AtomicUsize::new(0);
                        pool.run(&|_, n| {
                            done.fetch_add(1, Ordering::Relaxed);
                            assert!(n == 1 || n == 3);
                        });
                        total.fetch_add(1, Ordering::Relaxed);
                        assert!(matches!(done.load(Ordering::Relaxed), 1 | 3));
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 600);
    }
}
