//! Any byte string given to the GGUF reader must give a file or an error: never a panic, a
//! hang or an allocation out of proportion to the input.
#![no_main]

use gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let mut checksum = 0u8;
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes, "tensor {}", t.name);
        assert!(t.n_elements() > 0 || t.n_bytes == 0);
        checksum ^= bytes.iter().fold(0, |a, &b| a ^ b);
        assert!(file.tensor(&t.name).is_some_and(|x| std::ptr::eq(x, t)));
    }
    for (key, value) in file.metadata() {
        // The same entry, not an equal one: NaN is not equal to itself.
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        let _ = file.get_str(key);
        let _ = file.get_u32(key);
        let _ = file.get_f32(key);
        let _ = file.get_bool(key);
        let _ = file.get_str_array(key);
        let _ = file.get_f32_array(key);
        let _ = file.get_i32_array(key);
    }
    std::hint::black_box(checksum);
});
