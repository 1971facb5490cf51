//! Writes a few small valid GGUF files to seed the fuzzer's corpus:
//! `cargo run -p gguf --example fuzz_seeds -- fuzz/corpus/gguf_reader`

use gguf::{GgmlType, GgufWriter, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: fuzz_seeds <output directory>")?;
    std::fs::create_dir_all(&dir)?;

    let mut seeds = Vec::new();
    seeds.push(("empty", GgufWriter::new()));

    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama")
        .add("llama.block_count", 1u32)
        .add("llama.rope.freq_base", 10000.0f32)
        .add("tokenizer.ggml.tokens", vec!["<s>", "a", "\u{2581}b"])
        .add("tokenizer.ggml.scores", vec![0.0f32, -1.0, -2.0])
        .add("tokenizer.ggml.token_type", vec![3i32, 1, 1])
        .add("tokenizer.ggml.add_bos_token", true);
    w.add_tensor("token_embd.weight", &[4, 3], GgmlType::F32, vec![0; 48])?;
    w.add_tensor("blk.0.attn_q.weight", &[32, 2], GgmlType::Q4_0, vec![1; 36])?;
    w.add_tensor("output_norm.weight", &[4], GgmlType::F16, vec![2; 8])?;
    seeds.push(("llama_like", w));

    let mut w = GgufWriter::new().with_alignment(8);
    let values = [
        Value::U8(1),
        Value::I8(-1),
        Value::U16(2),
        Value::I16(-2),
        Value::U32(3),
        Value::I32(-3),
        Value::U64(4),
        Value::I64(-4),
        Value::F32(0.5),
        Value::F64(0.25),
        Value::Bool(false),
        Value::String("s".into()),
        Value::Array(vec![
            Value::from(vec![1u16, 2]),
            Value::from(vec!["x", "y"]),
        ]),
    ];
    for (i, v) in values.into_iter().enumerate() {
        w.add(&format!("k{i}"), v);
    }
    w.add_tensor("k", &[256], GgmlType::Q4_K, vec![3; 144])?;
    w.add_tensor("s", &[], GgmlType::F32, vec![0; 4])?;
    seeds.push(("all_types", w));

    for (name, w) in seeds {
        std::fs::write(format!("{dir}/{name}.gguf"), w.to_bytes())?;
    }
    Ok(())
}
