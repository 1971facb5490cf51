//! Several sequences evaluated in one forward pass (`Session::eval_together`) must give what
//! each gives alone, whatever mix of prompt and single tokens the batch holds, and the
//! mean-pooled embedding must not depend on the batch size.

use engine::CpuBackend;
use engine::{LogitRows, Model, Session};
use std::path::Path;
use std::sync::Arc;

fn model(name: &str) -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/synthetic")
        .join(name);
    Model::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Three sequences: each first alone, then the same steps batched together.
fn check(name: &str) {
    let m = model(name);
    let pool = CpuBackend::shared(2);
    let prompts: [&[u32]; 3] = [&[1, 7, 3, 9, 4], &[2, 8], &[5, 5, 6, 1, 2, 3, 4, 11, 12]];
    // Steps: (sequence, tokens) in order; later steps decode one token each while one
    // sequence is still taking its prompt.
    let steps: Vec<Vec<(usize, Vec<u32>)>> = vec![
        vec![(0, prompts[0].to_vec()), (1, prompts[1].to_vec())],
        vec![(0, vec![13]), (1, vec![14]), (2, prompts[2].to_vec())],
        vec![(2, vec![15]), (0, vec![16]), (1, vec![17])],
        vec![(1, vec![18]), (2, vec![19])],
    ];
    let n_vocab = m.n_vocab();
    let mut alone: Vec<Session> = (0..3).map(|_| m.session(64, Arc::clone(&pool))).collect();
    let mut together: Vec<Session> = (0..3).map(|_| m.session(64, Arc::clone(&pool))).collect();
    for (k, step) in steps.iter().enumerate() {
        let expected: Vec<Vec<f32>> = step
            .iter()
            .map(|(s, toks)| alone[*s].eval(toks, LogitRows::Last).unwrap().to_vec())
            .collect();
        let mut picked: Vec<&mut Session> = Vec::new();
        // Borrow the step's sessions mutably, in the step's order.
        let mut slots: Vec<Option<&mut Session>> = together.iter_mut().map(Some).collect();
        for (s, _) in step {
            picked.push(slots[*s].take().expect("a sequence once per step"));
        }
        let tokens: Vec<&[u32]> = step.iter().map(|(_, t)| t.as_slice()).collect();
        let mut got = vec![f32::NAN; 3];
        Session::eval_together(&mut picked, &tokens, &mut got).unwrap();
        assert_eq!(got.len(), step.len() * n_vocab, "{name} step {k}");
        for (i, exp) in expected.iter().enumerate() {
            let d = max_diff(&got[i * n_vocab..(i + 1) * n_vocab], exp);
            assert!(
                d < 1e-3,
                "{name} step {k} sequence {}: max |Δ| {d}",
                step[i].0
            );
        }
    }
    for (a, b) in alone.iter().zip(&together) {
        assert_eq!(a.pos(), b.pos());
    }
}

#[test]
fn llama_batches_match_single_sequences() {
    for name in [
        "llama_f32.gguf",
        "llama_q4_0.gguf",
        "llama_q4_k.gguf",
        "llama_q8_0.gguf",
    ] {
        check(name);
    }
}

#[test]
fn gemma3_batches_match_single_sequences() {
    for name in ["gemma3_q4_k.gguf", "gemma3_f16.gguf"] {
        check(name);
    }
}

#[test]
fn a_full_context_refuses_the_whole_batch() {
    let m = model("llama_f32.gguf");
    let pool = CpuBackend::shared(1);
    let mut a = m.session(4, Arc::clone(&pool));
    let mut b = m.session(64, Arc::clone(&pool));
    let mut out = Vec::new();
    let err = Session::eval_together(&mut [&mut a, &mut b], &[&[1, 2, 3, 4, 5], &[1]], &mut out);
    assert!(err.is_err());
    assert_eq!((a.pos(), b.pos()), (0, 0), "nothing is evaluated");
    let err = Session::eval_together(&mut [&mut a], &[&[1], &[2]], &mut out);
    assert!(err.is_err(), "one token list per session");
}

#[test]
fn embeddings_are_unit_length_and_batch_size_independent() {
    let m = model("llama_q8_0.gguf");
    let pool = CpuBackend::shared(2);
    let tokens: Vec<u32> = (1..40).collect();
    let mut s = m.session(64, Arc::clone(&pool));
    let e1 = s.embed(&tokens).unwrap();
    assert_eq!(e1.len(), m.config().n_embd);
    let norm: f32 = e1.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    s.set_batch(7);
    let e2 = s.embed(&tokens).unwrap();
    assert!(max_diff(&e1, &e2) < 1e-3);
    let other = s.embed(&[3, 3, 3]).unwrap();
    assert!(
        max_diff(&e1, &other) > 1e-3,
        "different texts, different vectors"
    );
}

/// The server evaluates a long input in chunks between other requests' steps: pooling the
/// chunks' hidden states gives the embedding of the whole input.
#[test]
fn an_embedding_pooled_chunk_by_chunk_matches_the_whole() {
    let m = model("llama_q8_0.gguf");
    let pool = CpuBackend::shared(2);
    let tokens: Vec<u32> = (1..40).collect();
    let mut s = m.session(64, Arc::clone(&pool));
    let whole = s.embed(&tokens).unwrap();
    s.reset();
    let mut pooler = engine::Pooler::new(&m);
    for chunk in tokens.chunks(11) {
        pooler.add(s.eval(chunk, LogitRows::Hidden).unwrap());
    }
    let chunked = pooler.finish();
    assert!(
        max_diff(&whole, &chunked) < 1e-3,
        "{whole:?} vs {chunked:?}"
    );
}
