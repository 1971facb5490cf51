//! Writer -> reader round trips for every value type, nested arrays and tensors.

use gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value};

fn all_values() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60000)),
        ("t.i16", Value::I16(-30000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.bool", Value::Bool(true)),
        ("t.false", Value::Bool(false)),
        ("t.string", Value::String("héllo ▁wörld \u{1F600}".into())),
        ("t.empty_string", Value::String(String::new())),
        ("t.empty_array", Value::Array(vec![])),
        ("t.arr_u8", Value::from(vec![1u8, 2, 255])),
        ("t.arr_i8", Value::from(vec![-1i8, 0, 127])),
        ("t.arr_u16", Value::from(vec![1u16, 65535])),
        ("t.arr_i16", Value::from(vec![-1i16, 32767])),
        ("t.arr_u32", Value::from(vec![7u32, 8, 9])),
        ("t.arr_i32", Value::from(vec![-7i32, 8, 9])),
        ("t.arr_u64", Value::from(vec![u64::MAX, 0])),
        ("t.arr_i64", Value::from(vec![i64::MIN, i64::MAX])),
        ("t.arr_f32", Value::from(vec![0.25f32, -0.5, f32::INFINITY])),
        ("t.arr_f64", Value::from(vec![1e300f64, -0.0])),
        ("t.arr_bool", Value::from(vec![true, false, true])),
        ("t.arr_str", Value::from(vec!["a", "", "ccc"])),
        (
            "t.nested",
            Value::Array(vec![
                Value::from(vec![1u32, 2]),
                Value::Array(vec![]),
                Value::from(vec!["x"]),
                Value::Array(vec![Value::from(vec![Value::from(vec![true])])]),
            ]),
        ),
    ]
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w.add(k, v);
    }
    w.add_tensor("a", &[3], GgmlType::F32, f32_bytes(&[1.0, 2.0, 3.0]))
        .unwrap();
    w.add_tensor("b", &[32, 2], GgmlType::Q4_0, vec![0xAB; 36])
        .unwrap();
    w.add_tensor("c", &[256], GgmlType::Q4_K, vec![7; 144])
        .unwrap();
    w.add_tensor("d", &[2, 3, 4, 5], GgmlType::F16, vec![1; 240])
        .unwrap();
    w.add_tensor("empty", &[0, 4], GgmlType::F32, vec![])
        .unwrap();
    w
}

fn check(f: &GgufFile, alignment: u64) {
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), alignment);
    let got: Vec<_> = f
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("t."))
        .cloned()
        .collect();
    let want: Vec<_> = all_values()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(got, want);
    for (k, v) in all_values() {
        assert_eq!(f.get(k), Some(&v), "{k}");
    }
    let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "empty"]);
    let a = f.tensor("a").unwrap();
    assert_eq!(a.dims, [3]);
    assert_eq!(f.tensor_data(a), f32_bytes(&[1.0, 2.0, 3.0]).as_slice());
    let b = f.tensor("b").unwrap();
    assert_eq!((b.ty, b.n_elements(), b.n_bytes), (GgmlType::Q4_0, 64, 36));
    assert_eq!(f.tensor_data(b), [0xAB; 36].as_slice());
    assert_eq!(f.tensor_data(f.tensor("c").unwrap()), [7; 144].as_slice());
    let d = f.tensor("d").unwrap();
    assert_eq!(
        (d.dims.as_slice(), d.n_elements()),
        ([2, 3, 4, 5].as_slice(), 120)
    );
    assert_eq!(f.tensor_data(d), [1; 240].as_slice());
    assert!(f.tensor_data(f.tensor("empty").unwrap()).is_empty());
    assert!(f.tensor("missing").is_none());
    for t in f.tensors() {
        assert_eq!((f.data_offset() + t.offset) % alignment, 0, "{}", t.name);
    }
}

#[test]
fn round_trip_in_memory() {
    let f = GgufFile::from_bytes(sample_writer().to_bytes()).unwrap();
    check(&f, 32);
}

#[test]
fn round_trip_with_alignment_through_a_file() {
    let w = sample_writer().with_alignment(64);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf_roundtrip.gguf");
    w.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    check(&f, 64);
    assert_eq!(f.get_u32("general.alignment").unwrap(), Some(64));
    assert_eq!(f.file_size(), std::fs::metadata(&path).unwrap().len());
    drop(f);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn open_reports_missing_file() {
    let err = GgufFile::open("/nonexistent/dir/model.gguf").unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(
        err.to_string().contains("/nonexistent/dir/model.gguf"),
        "{err}"
    );
}

#[test]
fn typed_getters() {
    let f = GgufFile::from_bytes(sample_writer().to_bytes()).unwrap();
    assert_eq!(
        f.get_str("t.string").unwrap(),
        Some("héllo ▁wörld \u{1F600}")
    );
    assert_eq!(f.get_str("absent").unwrap(), None);
    assert_eq!(f.get_u64("t.u8").unwrap(), Some(200));
    assert_eq!(f.get_u64("t.u64").unwrap(), Some(u64::MAX));
    assert_eq!(f.get_u32("t.u32").unwrap(), Some(4_000_000_000));
    assert_eq!(f.get_f32("t.f32").unwrap(), Some(-1.5e-7));
    assert_eq!(f.get_f32("t.u16").unwrap(), Some(60000.0));
    assert_eq!(f.get_bool("t.bool").unwrap(), Some(true));
    assert_eq!(f.get_array("t.arr_u8").unwrap().map(|a| a.len()), Some(3));
    assert_eq!(
        f.get_str_array("t.arr_str").unwrap(),
        Some(vec!["a", "", "ccc"])
    );
    assert_eq!(f.get_str_array("t.empty_array").unwrap(), Some(vec![]));
    assert_eq!(
        f.get_f32_array("t.arr_f32").unwrap(),
        Some(vec![0.25, -0.5, f32::INFINITY])
    );
    assert_eq!(f.get_i32_array("t.arr_i32").unwrap(), Some(vec![-7, 8, 9]));
    assert_eq!(f.get_i32_array("t.arr_u8").unwrap(), Some(vec![1, 2, 255]));

    let wrong = |e: GgufError, key: &str| {
        let msg = e.to_string();
        assert!(matches!(e, GgufError::WrongType { .. }), "{msg}");
        assert!(msg.contains(key), "{msg}");
    };
    wrong(f.get_str("t.u32").unwrap_err(), "t.u32");
    wrong(f.get_u64("t.i8").unwrap_err(), "t.i8");
    wrong(f.get_u64("t.string").unwrap_err(), "t.string");
    wrong(f.get_bool("t.u8").unwrap_err(), "t.u8");
    wrong(f.get_f32("t.string").unwrap_err(), "t.string");
    wrong(f.get_array("t.u8").unwrap_err(), "t.u8");
    wrong(f.get_str_array("t.arr_u32").unwrap_err(), "t.arr_u32");
    wrong(f.get_str_array("t.string").unwrap_err(), "t.string");
    wrong(f.get_f32_array("t.arr_str").unwrap_err(), "t.arr_str");
    wrong(f.get_i32_array("t.arr_u64").unwrap_err(), "t.arr_u64");
    let e = f.get_u32("t.u64").unwrap_err();
    assert!(matches!(e, GgufError::OutOfRange { .. }), "{e}");
    assert!(e.to_string().contains("t.u64"), "{e}");
}

#[test]
fn writer_replaces_keys_in_place() {
    let mut w = GgufWriter::new();
    w.add("a", 1u32).add("b", "x").add("a", 2u32);
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let keys: Vec<_> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(f.get_u32("a").unwrap(), Some(2));
}

#[test]
fn writer_checks_tensors() {
    let mut w = GgufWriter::new();
    let e = w
        .add_tensor("x", &[4], GgmlType::F32, vec![0; 15])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::DataLength { found: 15, .. }), "{e}");
    assert!(
        e.to_string().contains("`x`") && e.to_string().contains("16"),
        "{e}"
    );
    let e = w
        .add_tensor("q", &[16, 2], GgmlType::Q4_0, vec![0; 18])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::DataLength { .. }), "{e}");
    let e = w
        .add_tensor("d", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::TooManyDims { .. }), "{e}");
    w.add_tensor("x", &[4], GgmlType::F32, vec![0; 16]).unwrap();
    let e = w
        .add_tensor("x", &[4], GgmlType::F32, vec![0; 16])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::DuplicateTensor { .. }), "{e}");
}

#[test]
fn scalar_tensor_and_no_tensors() {
    let mut w = GgufWriter::new();
    w.add_tensor("s", &[], GgmlType::F32, vec![0, 0, 128, 63])
        .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.tensor("s").unwrap().n_elements(), 1);
    assert_eq!(f.tensor_data(&f.tensors()[0]), [0, 0, 128, 63].as_slice());

    let f = GgufFile::from_bytes(GgufWriter::new().to_bytes()).unwrap();
    assert!(f.metadata().is_empty() && f.tensors().is_empty());
}

#[test]
fn version_2_is_read() {
    let mut bytes = sample_writer().to_bytes();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(GgufFile::from_bytes(bytes).unwrap().version(), 2);
}

#[test]
fn foreign_tensor_info_gives_empty_slice() {
    let f = GgufFile::from_bytes(sample_writer().to_bytes()).unwrap();
    let mut t = f.tensor("a").unwrap().clone();
    t.offset = u64::MAX - 3;
    assert!(f.tensor_data(&t).is_empty());
    t.dims = vec![u64::MAX, 2];
    assert_eq!(t.n_elements(), u64::MAX);
}

#[test]
fn tensor_bytes_read_through_the_file_equal_the_mapped_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    sample_writer().write(&path).unwrap();
    for file in [
        GgufFile::open(&path).unwrap(),
        GgufFile::from_bytes(std::fs::read(&path).unwrap()).unwrap(),
    ] {
        for t in file.tensors() {
            let want = file.tensor_data(t);
            let mut got = vec![0u8; want.len()];
            file.read_tensor_bytes(t, 0, &mut got).unwrap();
            assert_eq!(got, want, "{}", t.name);
            if t.n_bytes < 2 {
                continue;
            }
            let mut tail = vec![0u8; 2];
            file.read_tensor_bytes(t, t.n_bytes - 2, &mut tail).unwrap();
            assert_eq!(tail, want[want.len() - 2..]);
            // Past the tensor's end, or an offset that overflows: an error, not other bytes.
            let mut one = [0u8; 1];
            let err = file.read_tensor_bytes(t, t.n_bytes, &mut one).unwrap_err();
            assert!(err.to_string().contains("past its end"), "{err}");
            assert!(file.read_tensor_bytes(t, u64::MAX, &mut one).is_err());
        }
    }
}

mod header_prefix {
    use gguf::{header_size, GgmlType, GgufError, GgufFile, GgufWriter};

    fn sample() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.add("general.architecture", "llama");
        w.add("general.name", "x".repeat(5000).as_str());
        for i in 0..40 {
            w.add_tensor(
                &format!("blk.{i}.weight"),
                &[64, 4],
                GgmlType::F32,
                vec![1; 64 * 4 * 4],
            )
            .unwrap();
        }
        w.to_bytes()
    }

    #[test]
    fn every_prefix_is_either_too_short_or_the_whole_header() {
        let bytes = sample();
        let full = GgufFile::from_bytes(bytes.clone()).unwrap();
        let size = bytes.len() as u64;
        let header = full.data_offset();
        assert!(header < size / 2, "the data must dominate the sample");
        for n in 0..bytes.len() {
            match header_size(&bytes[..n], size).unwrap() {
                None => assert!(
                    (n as u64) < header,
                    "a prefix of {n} bytes holds the header"
                ),
                Some(h) => {
                    assert_eq!(h, header, "prefix of {n} bytes");
                    // The tensor infos end before the padding: the earliest success may come
                    // a few bytes before the data section.
                    assert!(n as u64 + full.alignment() > header);
                }
            }
            if (n as u64) > header {
                break;
            }
        }
        assert_eq!(header_size(&bytes, size).unwrap(), Some(header));
    }

    #[test]
    fn invalid_headers_are_errors_not_requests_for_more() {
        let mut bytes = sample();
        let size = bytes.len() as u64;
        bytes[0] = b'X';
        assert!(matches!(
            header_size(&bytes[..64], size),
            Err(GgufError::BadMagic { .. })
        ));
        // A declared size too small for the tensors: the layout check fails.
        let bytes = sample();
        let header = GgufFile::from_bytes(bytes.clone()).unwrap().data_offset();
        let prefix = &bytes[..header as usize];
        assert!(header_size(prefix, header + 10).is_err());
    }

    #[test]
    fn a_huge_declared_size_reserves_nothing_unusual() {
        // Counts are checked against the declared size, memory against the bytes in hand.
        let bytes = sample();
        assert_eq!(header_size(&bytes[..100], u64::MAX).unwrap(), None);
    }
}

#[test]
fn from_file_copies_a_file_exactly() {
    for w in [sample_writer(), sample_writer().with_alignment(64)] {
        let bytes = w.to_bytes();
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        let copy = GgufWriter::from_file(&f).unwrap();
        assert_eq!(copy.to_bytes(), bytes);
        // What a test changes in the copy is all that changes.
        let mut changed = GgufWriter::from_file(&f).unwrap();
        changed.add("general.name", "renamed");
        let g = GgufFile::from_bytes(changed.to_bytes()).unwrap();
        assert_eq!(g.get_str("general.name").unwrap(), Some("renamed"));
        assert_eq!(g.metadata().len(), f.metadata().len() + 1);
        check(&g, f.alignment());
    }
}
