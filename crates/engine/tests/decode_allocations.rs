//! The decode loop allocates nothing: once a session has evaluated its first tokens, each
//! further token reuses the scratch buffers, the cache and the logits buffer. Counted with a
//! global allocator that tallies every allocation of the process (the pool's threads included).

use engine::CpuBackend;
use engine::{LogitRows, Model};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations while decoding 100 tokens after a prompt of `prompt` tokens.
fn decode_allocations(name: &str, threads: usize, prompt: usize) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/synthetic")
        .join(name);
    decode_allocations_at(&path, threads, prompt)
}

fn decode_allocations_at(path: &Path, threads: usize, prompt: usize) -> usize {
    let name = path.display();
    let model = Model::load(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let pool = CpuBackend::shared(threads);
    let start = ALLOCATIONS.load(Ordering::Relaxed);
    let mut session = model.session(prompt + 128, pool);
    // The prompt and a first decoded token size every buffer.
    let prompt: Vec<u32> = (0..prompt as u32).map(|i| 1 + i * 7 % 200).collect();
    session.eval(&prompt, LogitRows::Last).unwrap();
    session.eval(&[3], LogitRows::Last).unwrap();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(
        before > start,
        "the counter sees the session's buffers being made"
    );
    let mut token = 4;
    for _ in 0..100 {
        let logits = session.eval(&[token], LogitRows::Last).unwrap();
        // Greedy, so that the tokens depend on the logits as in a real loop.
        token = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32);
    }
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

// One test function: the counter is global, and tests of one binary run on parallel threads.
#[test]
fn decoding_a_token_allocates_nothing() {
    for name in [
        "llama_q4_1.gguf",
        "llama_q6_k.gguf",
        "llama_f16.gguf",
        "gemma3_q4_k.gguf",
    ] {
        for threads in [1, 2] {
            let n = decode_allocations(name, threads, 5);
            assert_eq!(
                n, 0,
                "{name}, {threads} threads: {n} allocations in 100 tokens"
            );
        }
    }
    // Decoding that crosses from one span of attention keys to the next (cpu_attention's
    // SPAN, 256 positions) while the spans run on several threads (SmolLM2's three KV heads
    // are fewer jobs than 2 threads want): the synthetic models' context is too short.
    let smollm2 = testutil::smollm2();
    for prompt in [230, 500] {
        let n = decode_allocations_at(&smollm2, 2, prompt);
        assert_eq!(
            n, 0,
            "SmolLM2, 2 threads, {prompt}-token prompt: {n} allocations"
        );
    }
}
