//! Embedding-only models (encoders such as BERT) through the session: pooling from the
//! metadata, the whole input in one forward pass, and clear refusals of what they cannot do.

use engine::CpuBackend;
use engine::{EngineError, LogitRows, Model, Pooling};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn arch_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../tests/data/arch/{name}.gguf"))
}

fn load(name: &str) -> Model {
    let path = arch_model(name);
    Model::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let n = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn encoders_are_embedding_only_with_their_pooling() {
    for (name, pooling) in [
        ("bert_mean", Pooling::Mean),
        ("bert_cls", Pooling::Cls),
        ("nomic_bert", Pooling::Mean),
    ] {
        let m = load(name);
        assert!(m.is_embedding_only(), "{name}");
        assert_eq!(m.pooling(), pooling, "{name}");
    }
    let llama = Model::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic/llama_f32.gguf"),
    )
    .expect("synthetic llama");
    assert!(!llama.is_embedding_only());
}

#[test]
fn an_encoder_reads_its_input_in_one_pass_whatever_the_batch() {
    let pool = CpuBackend::shared(2);
    let m = load("bert_cls");
    let tokens: Vec<u32> = (0..40).map(|i| 5 + (i * 7) % 200).collect();
    let mut s = m.session(64, Arc::clone(&pool));
    let whole = s.embed(&tokens).expect("embed");
    s.set_batch(4);
    let batched = s.embed(&tokens).expect("embed in small batches");
    assert!(
        cosine(&whole, &batched) > 0.99999,
        "{}",
        cosine(&whole, &batched)
    );
    let norm: f64 = whole
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "not unit length: {norm}");
    // CLS pooling sees the later tokens (the attention is not causal).
    let mut changed = tokens.clone();
    changed[30] = 9;
    let other = s.embed(&changed).expect("embed");
    assert!(cosine(&whole, &other) < 0.99999);
}

#[test]
fn an_encoder_refuses_generation_and_overlong_input() {
    let pool = CpuBackend::shared(2);
    let m = load("bert_mean");
    let mut s = m.session(16, Arc::clone(&pool));
    for rows in [LogitRows::Last, LogitRows::All] {
        match s.eval(&[2, 10, 3], rows) {
            Err(e @ EngineError::NoOutputHead) => {
                assert!(e.to_string().contains("embedding model"), "{e}")
            }
            other => panic!("{rows:?}: {:?}", other.map(|l| l.len())),
        }
    }
    let mut other = m.session(16, Arc::clone(&pool));
    let mut logits = Vec::new();
    let err = engine::Session::eval_together(&mut [&mut s, &mut other], &[&[2], &[2]], &mut logits);
    assert!(matches!(err, Err(EngineError::NoOutputHead)), "{err:?}");
    let long: Vec<u32> = vec![10; 17];
    match s.embed(&long) {
        Err(
            e @ EngineError::InputTooLong {
                tokens: 17,
                ctx: 16,
            },
        ) => {
            assert!(e.to_string().contains("17 tokens"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.embed(&long[..16]).expect("fits").len(), 128);
}
