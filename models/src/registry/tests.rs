//! The registry and the weight formats, end to end: loading, rejecting, quantising and inspecting files.

use super::*;
use crate::format::{dtype_for, inspect_file};
use crate::testutil::varmap_builder;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::DType;
use proptest::prelude::*;

fn small_cfg() -> PatchNetConfig {
    PatchNetConfig {
        input_side_px: 16,
        channels: [4, 8, 8],
        hidden: 32,
        num_classes: crate::NUM_CLASSES,
        input_norm: crate::patchnet::InputNorm::Fixed,
        box_head: false,
    }
}

fn small_tensors() -> HashMap<String, Tensor> {
    let (_vm, vb) = varmap_builder();
    let net = PatchNet::new(&small_cfg(), vb).unwrap();
    net.named_tensors().unwrap().into_iter().collect()
}

fn config_json(cfg: &PatchNetConfig) -> String {
    serde_json::to_string(cfg).unwrap()
}

/// Writes tensors exactly as given (any dtype), bypassing `save_safetensors`' f32 conversion.
fn write_raw(tensors: &HashMap<String, Tensor>, cfg_json: &str, path: &Path) {
    let meta = HashMap::from([
        (KIND_KEY.to_string(), PATCHNET_KIND.to_string()),
        (CONFIG_KEY.to_string(), cfg_json.to_string()),
    ]);
    let bytes = safetensors::serialize(tensors.iter(), Some(meta)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn load_err(path: &Path) -> ModelError {
    PatchNet::load(path, &Device::Cpu).unwrap_err()
}

#[test]
fn quant_dtype_parses_its_names() {
    for (s, d) in [
        ("f32", QuantDtype::F32),
        ("f16", QuantDtype::F16),
        ("q8_0", QuantDtype::Q8_0),
        ("Q4_0", QuantDtype::Q4_0),
        ("q4k", QuantDtype::Q4K),
    ] {
        assert_eq!(s.parse::<QuantDtype>().unwrap(), d);
        assert_eq!(d.to_string().parse::<QuantDtype>().unwrap(), d);
    }
    let err = "int3".parse::<QuantDtype>().unwrap_err();
    assert!(err.to_string().contains("int3"));
}

#[test]
fn fallback_goes_q4k_then_q8_0_then_f32() {
    assert_eq!(
        dtype_for("a", &[44, 256], QuantDtype::Q4K),
        (QuantDtype::Q4K, None)
    );
    let (d, note) = dtype_for("a", &[44, 32], QuantDtype::Q4K);
    assert_eq!(d, QuantDtype::Q8_0);
    assert!(note.unwrap().contains("found 32"));
    assert_eq!(
        dtype_for("a", &[4, 20], QuantDtype::Q4_0).0,
        QuantDtype::F32
    );
    assert_eq!(
        dtype_for("a", &[4, 20], QuantDtype::F16),
        (QuantDtype::F16, None)
    );
}

#[test]
fn truncated_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("p.safetensors");
    save_safetensors(
        &small_tensors(),
        &config_json(&small_cfg()),
        PATCHNET_KIND,
        &st,
    )
    .unwrap();
    let gguf = dir.path().join("p.gguf");
    quantize_file(&st, &gguf, QuantDtype::Q8_0).unwrap();
    for path in [&st, &gguf] {
        let bytes = std::fs::read(path).unwrap();
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        let err = load_err(&cut);
        assert!(matches!(err, ModelError::BadFile { .. }), "{err}");
        assert!(err.to_string().contains("cut"), "{err}");
    }
}

#[test]
fn wrong_magic_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"these are not weights at all").unwrap();
    let err = load_err(&path);
    assert!(matches!(err, ModelError::BadFile { .. }), "{err}");
    assert!(err.to_string().contains("magic"), "{err}");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(load_err(&path), ModelError::BadFile { .. }));
    let err = load_err(&dir.path().join("absent.safetensors"));
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.safetensors");
    let mut tensors = small_tensors();
    tensors.remove("fc2.bias");
    save_safetensors(&tensors, &config_json(&small_cfg()), PATCHNET_KIND, &path).unwrap();
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::MissingTensor { tensor, .. } if tensor == "fc2.bias"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named_with_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.safetensors");
    let mut tensors = small_tensors();
    tensors.insert(
        "conv1.weight".into(),
        Tensor::zeros((4, 3, 5, 5), DType::F32, &Device::Cpu).unwrap(),
    );
    save_safetensors(&tensors, &config_json(&small_cfg()), PATCHNET_KIND, &path).unwrap();
    match load_err(&path) {
        ModelError::WrongShape {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "conv1.weight");
            assert_eq!(expected, vec![4, 3, 3, 3]);
            assert_eq!(found, vec![4, 3, 5, 5]);
        }
        other => panic!("expected WrongShape, got {other}"),
    }
}

/// A Q8_0 patch classifier keeps its 3×3 kernels flattened `(out, in·9)` when `in·9` is whole blocks
/// (conv1's 27 taps are not: f16); a flattened kernel of the wrong width is a shape error naming it.
#[test]
fn q8_0_conv_kernels_are_flattened_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PatchNetConfig {
        channels: [32, 32, 32],
        ..small_cfg()
    };
    let (_vm, vb) = varmap_builder();
    let net = PatchNet::new(&cfg, vb).unwrap();
    let float_path = dir.path().join("p.safetensors");
    net.save_safetensors(&float_path).unwrap();
    let q_path = dir.path().join("p.q8_0.gguf");
    let report = quantize_file(&float_path, &q_path, QuantDtype::Q8_0).unwrap();
    let conv2 = report
        .tensors
        .iter()
        .find(|t| t.name == "conv2.weight")
        .unwrap();
    assert_eq!(
        (conv2.shape.clone(), conv2.dtype.as_str()),
        (vec![32, 288], "q8_0")
    );
    let conv1 = report
        .tensors
        .iter()
        .find(|t| t.name == "conv1.weight")
        .unwrap();
    assert_eq!(
        (conv1.shape.clone(), conv1.dtype.as_str()),
        (vec![32, 3, 3, 3], "f16")
    );
    PatchNet::load(&q_path, &Device::Cpu).unwrap();

    // Rewrite the file with conv2 one block too wide.
    let set = WeightSet::read(&q_path, &Device::Cpu).unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for name in set.tensor_names() {
        let q = if name == "conv2.weight" {
            let t = Tensor::zeros((32, 320), DType::F32, &Device::Cpu).unwrap();
            QTensor::quantize(&t, GgmlDType::Q8_0).unwrap()
        } else {
            let t = set.tensor_f32(name).unwrap();
            QTensor::quantize(&t, GgmlDType::F32).unwrap()
        };
        tensors.push((name.to_string(), q));
    }
    let kind = gguf_file::Value::String(PATCHNET_KIND.into());
    let config = gguf_file::Value::String(config_json(&cfg));
    let meta = [(KIND_KEY, &kind), (CONFIG_KEY, &config)];
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut file = std::fs::File::create(&q_path).unwrap();
    gguf_file::write(&mut file, &meta, &refs).unwrap();
    drop(file);
    match load_err(&q_path) {
        ModelError::WrongShape {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "conv2.weight");
            assert_eq!(expected, vec![32, 32, 3, 3]);
            assert_eq!(found, vec![32, 320]);
        }
        other => panic!("expected WrongShape, got {other}"),
    }
}

#[test]
fn wrong_dtype_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.safetensors");
    let mut tensors = small_tensors();
    let fc1 = tensors["fc1.weight"].to_dtype(DType::U8).unwrap();
    tensors.insert("fc1.weight".into(), fc1);
    write_raw(&tensors, &config_json(&small_cfg()), &path);
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::WrongDtype { tensor, found, .. } if tensor == "fc1.weight" && found == "u8"),
        "{err}"
    );
}

#[test]
fn config_that_does_not_match_the_tensors_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.safetensors");
    let claimed = PatchNetConfig {
        hidden: 64,
        ..small_cfg()
    };
    save_safetensors(
        &small_tensors(),
        &config_json(&claimed),
        PATCHNET_KIND,
        &path,
    )
    .unwrap();
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::BadConfig { key, .. } if key == "hidden"),
        "{err}"
    );
    assert!(err.to_string().contains("fc1.weight"), "{err}");

    // Unparseable config and wrong kind are config errors too.
    write_raw(&small_tensors(), "{\"hidden\": 3}", &path);
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::BadConfig { key, .. } if key == CONFIG_KEY),
        "{err}"
    );
    save_safetensors(
        &small_tensors(),
        &config_json(&small_cfg()),
        PATCHNET_KIND,
        &path,
    )
    .unwrap();
    let err = GlanceNetModel::load(&path, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, ModelError::BadConfig { key, .. } if key == KIND_KEY),
        "{err}"
    );
    assert!(save_safetensors(&small_tensors(), "{}", "resnet", &path).is_err());
}

#[test]
fn load_any_picks_the_kind_and_inspect_lists_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.safetensors");
    save_safetensors(
        &small_tensors(),
        &config_json(&small_cfg()),
        PATCHNET_KIND,
        &path,
    )
    .unwrap();
    assert!(matches!(
        load_any(&path, &Device::Cpu).unwrap(),
        LoadedModel::Patch(_)
    ));
    let inspection = inspect_file(&path).unwrap();
    assert_eq!(inspection.tensors.len(), 10);
    assert_eq!(inspection.kind.as_deref(), Some(PATCHNET_KIND));
    let text = inspection.to_string();
    assert!(
        text.contains("fc1.weight") && text.contains("[32, 32]") && text.contains("total"),
        "{text}"
    );
}

fn valid_files() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("p.safetensors");
    save_safetensors(
        &small_tensors(),
        &config_json(&small_cfg()),
        PATCHNET_KIND,
        &st,
    )
    .unwrap();
    let gguf = dir.path().join("p.gguf");
    quantize_file(&st, &gguf, QuantDtype::Q4_0).unwrap();
    vec![std::fs::read(st).unwrap(), std::fs::read(gguf).unwrap()]
}

fn parse_model(bytes: &[u8]) -> Result<PatchNet, ModelError> {
    let set = WeightSet::from_bytes(Path::new("fuzzed"), bytes, &Device::Cpu)?;
    set.expect_kind(PATCHNET_KIND)?;
    let cfg: PatchNetConfig = set.parse_config()?;
    PatchNet::from_weight_set(&cfg, &set)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn truncated_bytes_are_an_error_never_a_panic(which in 0usize..2, frac in 0.0f64..1.0) {
        let files = valid_files();
        let bytes = &files[which];
        // GGUF pads each tensor to 32 bytes: cutting only trailing padding leaves a valid file.
        let len = ((bytes.len() - 32) as f64 * frac) as usize;
        prop_assert!(parse_model(&bytes[..len]).is_err());
    }

    #[test]
    fn corrupted_bytes_never_panic(which in 0usize..2, frac in 0.0f64..1.0, value: u8, run in 1usize..9) {
        let mut bytes = valid_files().swap_remove(which);
        let at = (bytes.len() as f64 * frac) as usize;
        let end = (at + run).min(bytes.len());
        for b in &mut bytes[at..end] {
            *b = value;
        }
        // A flipped weight byte may still load; what must never happen is a panic.
        let _ = parse_model(&bytes);
    }
}
