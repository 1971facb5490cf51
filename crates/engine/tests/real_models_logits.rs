//! Teacher-forced parity with llama.cpp on the real models: for every golden prompt followed by
//! llama.cpp's own 64-token greedy continuation, hearth's argmax must equal llama.cpp's wherever
//! llama.cpp's top-two margin is at least 0.25 (≥ 99 % of those positions), and the mean |logit
//! difference| over llama.cpp's top-5 tokens must be ≤ 0.25. Golden data:
//! `tests/data/golden/logits_*.json`, made by `scripts/golden/make_golden.py`.

use engine::CpuBackend;
use engine::{LogitRows, Model};
use std::path::PathBuf;

const MARGIN: f64 = 0.25;
const MIN_ARGMAX_AGREEMENT: f64 = 0.99;
const MAX_MEAN_ABS_DIFF: f64 = 0.25;

fn check_model(model_path: PathBuf, golden_name: &str) {
    let g = testutil::golden(golden_name);
    let model = Model::load(&model_path).expect("model loads");
    let n_vocab = model.n_vocab();
    let pool = CpuBackend::shared(2);
    let prompts = g["prompts"].as_array().expect("prompts");
    assert!(prompts.len() >= 8, "need at least 8 golden prompts");
    let (mut agree, mut decisive, mut diff_sum, mut diff_n) = (0usize, 0usize, 0.0f64, 0usize);
    for p in prompts {
        let mut seq = testutil::golden_ids(&p["prompt_ids"]);
        seq.extend(testutil::golden_ids(&p["continuation_ids"]));
        let mut session = model.session(seq.len(), pool.clone());
        let logits = session.eval(&seq, LogitRows::All).expect("eval");
        let top_ids = p["top5_ids"].as_array().expect("top5_ids");
        let top_logits = p["top5_logits"].as_array().expect("top5_logits");
        let margins = p["margin"].as_array().expect("margin");
        assert_eq!(top_ids.len(), seq.len());
        let (mut p_agree, mut p_dec, mut p_diff) = (0, 0, 0.0);
        for pos in 0..seq.len() {
            let row = &logits[pos * n_vocab..(pos + 1) * n_vocab];
            let ref_ids = testutil::golden_ids(&top_ids[pos]);
            let ref_logits: Vec<f64> = top_logits[pos]
                .as_array()
                .expect("logits")
                .iter()
                .map(|x| x.as_f64().expect("logit"))
                .collect();
            for (&id, &l) in ref_ids.iter().zip(&ref_logits) {
                p_diff += (row[id as usize] as f64 - l).abs();
                diff_n += 1;
            }
            if margins[pos].as_f64().expect("margin") >= MARGIN {
                p_dec += 1;
                if engine::sampler::argmax(row) == ref_ids[0] {
                    p_agree += 1;
                }
            }
        }
        eprintln!(
            "{golden_name} {:>12}: argmax {p_agree}/{p_dec} on decisive positions, mean |Δ| top-5 {:.4}",
            p["name"].as_str().unwrap_or("?"),
            p_diff / (5 * seq.len()) as f64
        );
        agree += p_agree;
        decisive += p_dec;
        diff_sum += p_diff;
    }
    let agreement = agree as f64 / decisive as f64;
    let mean_diff = diff_sum / diff_n as f64;
    eprintln!(
        "{golden_name}: argmax agreement {agree}/{decisive} = {:.2} %, mean |Δlogit| top-5 {mean_diff:.4} \
         (llama.cpp flash on/off: {})",
        100.0 * agreement,
        g["reference_self_agreement"]["mean_abs_dlogit_top5"]
    );
    assert!(
        agreement >= MIN_ARGMAX_AGREEMENT,
        "argmax agreement {agreement:.4} < {MIN_ARGMAX_AGREEMENT}"
    );
    assert!(
        mean_diff <= MAX_MEAN_ABS_DIFF,
        "mean |Δlogit| {mean_diff:.4} > {MAX_MEAN_ABS_DIFF}"
    );
}

#[test]
fn smollm2_logits_match_llama_cpp() {
    check_model(testutil::smollm2(), "logits_smollm2.json");
}

#[test]
fn gemma3_logits_match_llama_cpp() {
    check_model(testutil::gemma3(), "logits_gemma3.json");
}

#[test]
fn qwen2_5_coder_logits_match_llama_cpp() {
    check_model(testutil::qwen2_5_coder(), "logits_qwen2_5_coder.json");
}
