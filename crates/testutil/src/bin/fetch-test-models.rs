//! Fetches the real test models into the cache and prints their paths.
fn main() {
    println!("{}", testutil::smollm2().display());
    println!("{}", testutil::gemma3().display());
    println!("{}", testutil::qwen2_5_coder().display());
}
