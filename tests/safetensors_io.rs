//! Safetensors I/O: round trips for every dtype (zero-copy), files written by Python's
//! safetensors, sharded sets, dtype conversion on load, and every malformed-file error.

use medsyn::io::{save_safetensors, TensorFile, TensorSet, MAX_HEADER_BYTES};
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A fresh, empty scratch folder unique to this process and test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsyn_io_{}_{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Writes a safetensors file by hand: length prefix, `header` verbatim (no padding), `data`.
fn raw_file(dir: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn int_tensor(values: Vec<i64>, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_i64(values, shape)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Asserts `r` failed with a message containing every one of `needles`.
fn assert_err<T>(r: medsyn::Result<T>, needles: &[&str]) -> String {
    let msg = match r {
        Ok(_) => panic!("expected an error containing {needles:?}"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` should mention `{n}`");
    }
    msg
}

/// One tensor of every dtype, including non-contiguous views and an odd-length u8
/// that would misalign everything after it if data were written in name order.
fn every_dtype(rng: &mut Philox) -> Vec<(String, Tensor)> {
    let base = Tensor::randn(rng, &[4, 6], DType::F32).unwrap();
    vec![
        (
            "a_u8_odd".into(),
            int_tensor(vec![0, 255, 7], &[3], DType::U8),
        ),
        (
            "b_f64".into(),
            Tensor::randn(rng, &[3, 5], DType::F64).unwrap(),
        ),
        ("c_f32_transposed".into(), base.t().unwrap()),
        ("d_f32_narrowed".into(), base.narrow(1, 2, 3).unwrap()),
        (
            "e_f16".into(),
            Tensor::randn(rng, &[7], DType::F16).unwrap(),
        ),
        (
            "f_bf16".into(),
            Tensor::randn(rng, &[2, 3, 5], DType::BF16).unwrap(),
        ),
        (
            "g_i64".into(),
            int_tensor(vec![-3, 0, 7, 1 << 40], &[2, 2], DType::I64),
        ),
        ("h_i32".into(), int_tensor(vec![-2, 2, 5], &[3], DType::I32)),
        ("i_scalar".into(), Tensor::scalar(1.5, DType::F32).unwrap()),
        (
            "j_empty".into(),
            Tensor::zeros(&[0, 4], DType::F32).unwrap(),
        ),
    ]
}

#[test]
fn round_trip_every_dtype_loads_zero_copy() {
    let dir = scratch("round_trip");
    let path = dir.join("all.safetensors");
    let tensors = every_dtype(&mut Philox::new(7));
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = HashMap::from([("writer".to_string(), "medsyn".to_string())]);
    save_safetensors(&path, &refs, Some(meta)).unwrap();

    let f = TensorFile::open(&path).unwrap();
    let mut names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(f.names(), names.as_slice());
    assert_eq!(
        f.metadata().get("writer").map(String::as_str),
        Some("medsyn")
    );
    for (name, t) in &tensors {
        let info = f.info(name).unwrap();
        assert_eq!(info.dtype(), Some(t.dtype()), "{name}");
        assert_eq!(info.shape, t.shape(), "{name}");
        assert_eq!(
            info.byte_len,
            t.numel() * t.dtype().size_in_bytes(),
            "{name}"
        );
        let back = f.load(name).unwrap();
        assert_eq!(back.dtype(), t.dtype(), "{name}");
        assert_eq!(back.shape(), t.shape(), "{name}");
        assert!(
            back.is_mapped(),
            "{name} should load zero-copy from the map"
        );
        if t.dtype().is_float() {
            assert_eq!(back.to_vec_f64(), t.to_vec_f64(), "{name}");
        } else {
            assert_eq!(back.to_vec_i64(), t.to_vec_i64(), "{name}");
        }
    }
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn saved_file_is_standard_safetensors() {
    let dir = scratch("standard");
    let path = dir.join("std.safetensors");
    let tensors = every_dtype(&mut Philox::new(8));
    let refs: Vec<(&String, &Tensor)> = tensors.iter().map(|(n, t)| (n, t)).collect();
    save_safetensors(
        &path,
        &refs,
        Some(HashMap::from([("k".to_string(), "v".to_string())])),
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header must be padded to a multiple of 8");
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(
        header.starts_with("{\"__metadata__\":{\"k\":\"v\"}"),
        "{header}"
    );
    // Header entries appear in name order.
    let pos: Vec<usize> = tensors
        .iter()
        .map(|(name, _)| header.find(&format!("\"{name}\"")).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{header}");
    // The reference reader (safetensors crate) agrees on every tensor's bytes.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, t) in &tensors {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.shape(), t.shape());
        assert_eq!(format!("{:?}", view.dtype()), t.dtype().safetensors_name());
        let expect = t.contiguous().unwrap();
        let storage = expect.storage();
        let size = t.dtype().size_in_bytes();
        let start = expect.layout().offset() * size;
        assert_eq!(
            view.data(),
            &storage.cpu().as_bytes()[start..start + t.numel() * size],
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn save_replaces_atomically_and_old_maps_stay_valid() {
    let dir = scratch("atomic");
    let path = dir.join("w.safetensors");
    let a = Tensor::from_vec(vec![1f32, 2., 3.], &[3]).unwrap();
    save_safetensors(&path, &[("w", &a)], None).unwrap();
    let old = TensorFile::open(&path).unwrap().load("w").unwrap();
    assert!(old.is_mapped());
    let b = Tensor::from_vec(vec![9f32, 8.], &[2]).unwrap();
    save_safetensors(&path, &[("w", &b)], None).unwrap();
    assert_eq!(
        old.to_vec_f32(),
        vec![1., 2., 3.],
        "a map of the replaced file keeps its bytes"
    );
    assert_eq!(
        TensorFile::open(&path)
            .unwrap()
            .load("w")
            .unwrap()
            .to_vec_f32(),
        vec![9., 8.]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn save_rejects_bad_requests_without_leaving_files() {
    let dir = scratch("save_errors");
    let t = Tensor::zeros(&[2], DType::F32).unwrap();
    let p = dir.join("dup.safetensors");
    assert_err(
        save_safetensors(&p, &[("x", &t), ("x", &t)], None),
        &["dup.safetensors", "`x`", "twice"],
    );
    assert_err(
        save_safetensors(&p, &[("__metadata__", &t)], None),
        &["dup.safetensors", "reserved"],
    );
    let missing = dir.join("no_such_dir").join("w.safetensors");
    assert_err(
        save_safetensors(&missing, &[("x", &t)], None),
        &["w.safetensors"],
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn python_written_file_loads_with_values_and_metadata() {
    let path = fixture("io_python_written.safetensors");
    let f = TensorFile::open(&path).unwrap();
    assert_eq!(
        f.names(),
        ["bf16", "f16", "f32", "i64", "i8", "mask", "scalar"]
    );
    assert_eq!(f.metadata()["source"], "io_files.py");

    let f32_ = f.load("f32").unwrap();
    assert!(f32_.is_mapped());
    assert_eq!(
        (f32_.dtype(), f32_.shape()),
        (DType::F32, &[2usize, 3, 4][..])
    );
    assert_eq!(
        f32_.to_vec_f64(),
        (0..24).map(|i| i as f64 * 0.25 - 3.0).collect::<Vec<_>>()
    );
    let f16_ = f.load("f16").unwrap();
    assert_eq!((f16_.dtype(), f16_.shape()), (DType::F16, &[2usize, 3][..]));
    assert_eq!(
        f16_.to_vec_f64(),
        (0..6).map(|i| i as f64 * 0.5 - 1.0).collect::<Vec<_>>()
    );
    let bf = f.load("bf16").unwrap();
    assert_eq!((bf.dtype(), bf.shape()), (DType::BF16, &[8usize][..]));
    assert_eq!(
        bf.to_vec_f64(),
        (0..8).map(|i| i as f64 * 0.125 - 0.5).collect::<Vec<_>>()
    );
    let ids = f.load("i64").unwrap();
    assert_eq!(ids.dtype(), DType::I64);
    assert_eq!(ids.to_vec_i64(), vec![-3, 0, 7, 1 << 40]);
    let mask = f.load("mask").unwrap();
    assert_eq!(f.info("mask").unwrap().file_dtype_name(), "BOOL");
    assert_eq!(
        (mask.dtype(), mask.to_vec_i64()),
        (DType::U8, vec![1, 0, 1])
    );
    let s = f.load("scalar").unwrap();
    assert_eq!((s.shape(), s.to_scalar().unwrap()), (&[][..], 1.5));
    // I8 is a valid safetensors dtype that medsyn does not load: named in the error.
    assert_eq!(f.info("i8").unwrap().dtype(), None);
    assert_err(
        f.load("i8"),
        &["io_python_written.safetensors", "`i8`", "I8"],
    );
}

#[test]
fn load_as_converts_floats_and_ints_and_refuses_crossing() {
    let f = TensorFile::open(fixture("io_python_written.safetensors")).unwrap();
    let h = f.load_as("f16", DType::F32).unwrap();
    assert_eq!(h.dtype(), DType::F32);
    assert_eq!(h.to_vec_f32(), vec![-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
    let b = f.load_as("f32", DType::BF16).unwrap();
    assert_eq!((b.dtype(), b.shape()), (DType::BF16, &[2usize, 3, 4][..]));
    assert_eq!(b.to_vec_f64()[1], -2.75);
    let same = f.load_as("bf16", DType::BF16).unwrap();
    assert!(same.is_mapped(), "no conversion needed: stays zero-copy");
    let m = f.load_as("mask", DType::I64).unwrap();
    assert_eq!(m.to_vec_i64(), vec![1, 0, 1]);
    // i64 holding 2^40 does not fit i32: refused rather than wrapped.
    assert_err(
        f.load_as("i64", DType::I32),
        &[
            "io_python_written.safetensors",
            "`i64`",
            "1099511627776",
            "i32",
        ],
    );
    assert_err(
        f.load_as("f32", DType::I64),
        &["io_python_written.safetensors", "`f32`", "i64"],
    );
    assert_err(
        f.load_as("i64", DType::F32),
        &["io_python_written.safetensors", "`i64`", "f32"],
    );
}

#[test]
fn load_expect_checks_shape_and_dtype() {
    let f = TensorFile::open(fixture("io_python_written.safetensors")).unwrap();
    let t = f.load_expect("f16", &[2, 3], DType::F32).unwrap();
    assert_eq!(t.dtype(), DType::F32);
    assert_err(
        f.load_expect("f16", &[3, 2], DType::F32),
        &["io_python_written.safetensors", "`f16`", "[2, 3]", "[3, 2]"],
    );
    assert_err(
        f.load_expect("f32", &[2, 3, 4], DType::I64),
        &["io_python_written.safetensors", "`f32`"],
    );
    assert_err(
        f.load_expect("nope", &[1], DType::F32),
        &["io_python_written.safetensors", "`nope`"],
    );
}

#[test]
fn sharded_set_opens_from_index_or_folder() {
    let index = fixture("io_sharded/model.safetensors.index.json");
    for set in [
        TensorSet::open(&index).unwrap(),
        TensorSet::open(fixture("io_sharded")).unwrap(),
    ] {
        assert!(set.is_sharded());
        assert_eq!(set.path(), index.as_path());
        assert_eq!(set.names(), ["a.bias", "a.weight", "b.ids", "b.weight"]);
        assert_eq!(set.files().len(), 2);
        assert_eq!(set.metadata()["total_size"], 68);
        let w = set.load_expect("a.weight", &[3, 2], DType::F32).unwrap();
        assert!(w.is_mapped());
        assert_eq!(w.to_vec_f32(), vec![0., 1., 2., 3., 4., 5.]);
        assert_eq!(
            set.load("a.bias").unwrap().to_vec_f32(),
            vec![0.5, -0.5, 1.0]
        );
        let b = set.load_as("b.weight", DType::F32).unwrap();
        assert_eq!(b.to_vec_f32(), vec![-1.5, -0.5, 0.5, 1.5]);
        assert_eq!(set.info("b.weight").unwrap().dtype(), Some(DType::BF16));
        assert_eq!(set.load("b.ids").unwrap().to_vec_i64(), vec![5, 6, 7]);
        assert_eq!(
            set.file_for("b.ids").unwrap().path().file_name().unwrap(),
            "model-00002-of-00002.safetensors"
        );
        assert_err(
            set.load("c.weight"),
            &[
                "model.safetensors.index.json",
                "`c.weight`",
                "model-00001-of-00002",
            ],
        );
        assert_err(
            set.load_expect("a.bias", &[4], DType::F32),
            &["model-00001-of-00002.safetensors", "`a.bias`"],
        );
    }
}

#[test]
fn tensor_set_opens_single_files_and_model_folders() {
    let dir = scratch("set_single");
    let t = Tensor::from_vec(vec![1f32, 2.], &[2]).unwrap();
    for name in [
        "model.safetensors",
        "diffusion_pytorch_model.safetensors",
        "weights.fp16.safetensors",
    ] {
        let sub = dir.join(name.replace('.', "_"));
        std::fs::create_dir(&sub).unwrap();
        save_safetensors(sub.join(name), &[("x", &t)], None).unwrap();
        let set = TensorSet::open(&sub).unwrap();
        assert!(!set.is_sharded());
        assert_eq!(set.path(), sub.join(name));
        assert_eq!(set.load("x").unwrap().to_vec_f32(), vec![1., 2.]);
        assert_err(set.load("y"), &[name, "`y`"]);
    }
    // The standard name wins over variants such as fp16 copies.
    let both = dir.join("both");
    std::fs::create_dir(&both).unwrap();
    save_safetensors(
        both.join("diffusion_pytorch_model.fp16.safetensors"),
        &[("x", &t)],
        None,
    )
    .unwrap();
    save_safetensors(
        both.join("diffusion_pytorch_model.safetensors"),
        &[("x", &t)],
        None,
    )
    .unwrap();
    assert_eq!(
        TensorSet::open(&both).unwrap().path(),
        both.join("diffusion_pytorch_model.safetensors")
    );
    // Two non-standard files: ambiguous, both named.
    let two = dir.join("two");
    std::fs::create_dir(&two).unwrap();
    save_safetensors(two.join("a.safetensors"), &[("x", &t)], None).unwrap();
    save_safetensors(two.join("b.safetensors"), &[("x", &t)], None).unwrap();
    assert_err(
        TensorSet::open(&two),
        &["two", "a.safetensors", "b.safetensors"],
    );
    // Pickles only: not supported, with the conversion one-liner.
    let pickles = dir.join("pickles");
    std::fs::create_dir(&pickles).unwrap();
    std::fs::write(pickles.join("pytorch_model.bin"), b"not really a pickle").unwrap();
    assert_err(
        TensorSet::open(&pickles),
        &[
            "pytorch_model.bin",
            "not supported",
            "save_file",
            "torch.load",
        ],
    );
    assert_err(
        TensorSet::open(pickles.join("pytorch_model.bin")),
        &["pytorch_model.bin", "not supported"],
    );
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_err(TensorSet::open(&empty), &["empty", "no .safetensors"]);
    assert_err(
        TensorSet::open(dir.join("missing")),
        &["missing", "cannot open"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sharded_index_errors_name_index_and_shard() {
    let dir = scratch("index_errors");
    let t = Tensor::from_vec(vec![1f32], &[1]).unwrap();
    save_safetensors(dir.join("s1.safetensors"), &[("x", &t)], None).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let p = write(
        "missing_shard.safetensors.index.json",
        r#"{"weight_map": {"x": "s1.safetensors", "y": "s9.safetensors"}}"#,
    );
    assert_err(
        TensorSet::open(&p),
        &[
            "missing_shard.safetensors.index.json",
            "s9.safetensors",
            "`y`",
        ],
    );
    let p = write(
        "wrong_shard.safetensors.index.json",
        r#"{"weight_map": {"x": "s1.safetensors", "z": "s1.safetensors"}}"#,
    );
    let set = TensorSet::open(&p).unwrap();
    assert_eq!(set.load("x").unwrap().to_vec_f32(), vec![1.0]);
    assert_err(
        set.load("z"),
        &[
            "s1.safetensors",
            "`z`",
            "wrong_shard.safetensors.index.json",
        ],
    );
    let p = write("bad.safetensors.index.json", "{not json");
    assert_err(TensorSet::open(&p), &["bad.safetensors.index.json", "JSON"]);
    let p = write("no_map.safetensors.index.json", r#"{"metadata": {}}"#);
    assert_err(
        TensorSet::open(&p),
        &["no_map.safetensors.index.json", "weight_map"],
    );
    let p = write("num.safetensors.index.json", r#"{"weight_map": {"x": 3}}"#);
    assert_err(TensorSet::open(&p), &["num.safetensors.index.json", "`x`"]);
    // A shard that is itself broken is named, along with the index that lists it.
    std::fs::write(dir.join("s2.safetensors"), b"tiny").unwrap();
    let p = write(
        "broken.safetensors.index.json",
        r#"{"weight_map": {"x": "s2.safetensors"}}"#,
    );
    assert_err(
        TensorSet::open(&p).unwrap().load("x"),
        &["s2.safetensors", "broken.safetensors.index.json"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unaligned_data_is_copied_with_correct_values() {
    let dir = scratch("unaligned");
    // Header of odd length: the f32 data starts at an address that is not 4-aligned.
    let header = r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert_ne!((8 + header.len()) % 4, 0);
    let data: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = raw_file(&dir, "odd.safetensors", header, &data);
    let t = TensorFile::open(&p).unwrap().load("x").unwrap();
    assert!(!t.is_mapped());
    assert_eq!(t.to_vec_f32(), vec![1.5, -2.0]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_files_give_errors_naming_file_and_tensor() {
    let dir = scratch("malformed");
    let f32x2 =
        |off: &str| format!(r#"{{"x":{{"dtype":"F32","shape":[2],"data_offsets":{off}}}}}"#);
    let eight = [0u8; 8];

    assert_err(
        TensorFile::open(dir.join("absent.safetensors")),
        &["absent.safetensors", "cannot open"],
    );
    std::fs::write(dir.join("short.safetensors"), [1u8, 2, 3]).unwrap();
    assert_err(
        TensorFile::open(dir.join("short.safetensors")),
        &["short.safetensors", "3 bytes"],
    );
    std::fs::write(dir.join("empty.safetensors"), []).unwrap();
    assert_err(
        TensorFile::open(dir.join("empty.safetensors")),
        &["empty.safetensors", "0 bytes"],
    );
    assert_err(TensorFile::open(&dir), &["is a directory"]);

    let mut long = 1000u64.to_le_bytes().to_vec();
    long.extend_from_slice(b"{}");
    std::fs::write(dir.join("longhdr.safetensors"), &long).unwrap();
    assert_err(
        TensorFile::open(dir.join("longhdr.safetensors")),
        &["longhdr.safetensors", "header length 1000"],
    );
    let mut huge = (MAX_HEADER_BYTES + 1).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    std::fs::write(dir.join("huge.safetensors"), &huge).unwrap();
    assert_err(
        TensorFile::open(dir.join("huge.safetensors")),
        &["huge.safetensors", "limit"],
    );

    let cases: Vec<(&str, String, &[u8], Vec<&str>)> = vec![
        ("notjson", "{\"x\": [".into(), &[], vec!["not valid JSON"]),
        ("array", "[1, 2]".into(), &[], vec!["not an object"]),
        ("beyond", f32x2("[0,8]"), &eight[..4], vec!["`x`", "past the data section"]),
        ("short_span", f32x2("[0,4]"), &eight[..4], vec!["`x`", "needs 8 bytes", "span 4"]),
        ("shape_mismatch", r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#.into(), &eight, vec!["`x`", "[3]", "needs 12 bytes"]),
        ("unknown_dtype", r#"{"x":{"dtype":"F13","shape":[2],"data_offsets":[0,8]}}"#.into(), &eight, vec!["`x`", "unknown dtype `F13`"]),
        ("no_shape", r#"{"x":{"dtype":"F32","data_offsets":[0,8]}}"#.into(), &eight, vec!["`x`", "missing `shape`"]),
        ("neg_shape", r#"{"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#.into(), &eight, vec!["`x`", "non-negative"]),
        ("reversed", f32x2("[8,0]"), &eight, vec!["`x`", "begin <= end"]),
        ("trailing", f32x2("[0,8]"), &[0u8; 12], vec!["4 trailing bytes"]),
        (
            "overlap",
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#.into(),
            &eight,
            vec!["`y`", "overlap", "`x`"],
        ),
        (
            "gap",
            r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#.into(),
            &[0u8; 12],
            vec!["`y`", "gap"],
        ),
        ("meta_not_strings", r#"{"__metadata__":{"a":1}}"#.into(), &[], vec!["__metadata__", "`a`", "string"]),
        (
            "overflow",
            r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#.into(),
            &eight,
            vec!["`x`", "overflows"],
        ),
    ];
    for (name, header, data, needles) in cases {
        let file = format!("{name}.safetensors");
        let p = raw_file(&dir, &file, &header, data);
        let mut all = vec![file.as_str()];
        all.extend(needles);
        assert_err(TensorFile::open(&p), &all);
        assert_err(TensorSet::open(&p), &all);
    }

    // A valid file: asking for a tensor it lacks names the file, the tensor, and near misses.
    let p = raw_file(&dir, "ok.safetensors", &f32x2("[0,8]"), &eight);
    let f = TensorFile::open(&p).unwrap();
    assert_eq!(f.load("x").unwrap().to_vec_f32(), vec![0.0, 0.0]);
    assert_err(
        f.info("model.x"),
        &["ok.safetensors", "`model.x`", "closest: `x`"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Python's safetensors reads what medsyn writes. Runs the check script when python3
/// with torch and safetensors is available (not needed for CI); otherwise says so.
#[test]
fn python_safetensors_reads_saved_file() {
    let dir = scratch("python_readable");
    let path = dir.join("from_rust.safetensors");
    let base = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
    let tensors = [
        ("f32_t", base.t().unwrap()),
        (
            "f64",
            Tensor::from_values((0..5).map(|i| i as f64 * 0.1).collect(), &[5], DType::F64)
                .unwrap(),
        ),
        (
            "f16",
            Tensor::from_values(
                (0..6).map(|i| i as f64 * 0.5 - 1.0).collect(),
                &[2, 3],
                DType::F16,
            )
            .unwrap(),
        ),
        (
            "bf16",
            Tensor::from_values(
                (0..8).map(|i| i as f64 * 0.125 - 0.5).collect(),
                &[8],
                DType::BF16,
            )
            .unwrap(),
        ),
        ("i64", int_tensor(vec![-3, 0, 7, 1 << 40], &[4], DType::I64)),
        ("i32", int_tensor(vec![-2, 2], &[2], DType::I32)),
        ("u8", int_tensor(vec![0, 255, 7], &[3], DType::U8)),
        ("scalar", Tensor::scalar(1.5, DType::F32).unwrap()),
    ];
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    save_safetensors(
        &path,
        &refs,
        Some(HashMap::from([(
            "writer".to_string(),
            "medsyn".to_string(),
        )])),
    )
    .unwrap();

    let has_python = std::process::Command::new("python3")
        .args(["-c", "import torch, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        eprintln!(
            "python3 with torch + safetensors not found: skipping the Python read-back check"
        );
        return;
    }
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fixtures/check_saved_readable.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    let _ = std::fs::remove_dir_all(&dir);
}
