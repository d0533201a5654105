//! Model files round-trip (f32, f16, bf16, sharded), and every kind of bad
//! input is an error that names the file, tensor or field, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nopescope::model::cpu::CpuEngine;
use nopescope::model::files::{load_model_dir, save_model, CONFIG_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE};
use nopescope::model::params::Params;
use nopescope::model::{Engine, ForwardOptions, HeadScales, ModelConfig, PositionEncoding};
use safetensors::tensor::{Dtype, TensorView};

fn tiny() -> ModelConfig {
    ModelConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 4,
        vocab_size: 50,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: false,
        training_length: 32,
        position_encoding: PositionEncoding::None,
        bos_token_id: None,
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nopescope-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn saved(name: &str) -> (PathBuf, Params<f32>) {
    let dir = tempdir(name);
    let params = Params::<f32>::random(&tiny(), 0.5, 3);
    save_model(&dir, &tiny(), &params).unwrap();
    (dir, params)
}

/// Writes `tensors` (name, dtype, shape, bytes) as a safetensors file.
fn write_st(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

fn tensors_of(params: &Params<f32>, dtype: Dtype) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    params
        .layout
        .tensors
        .iter()
        .map(|t| {
            let data = &params.data[t.range()];
            let bytes: Vec<u8> = match dtype {
                Dtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F16 => data
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                Dtype::BF16 => data
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => unreachable!(),
            };
            (t.name.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect()
}

fn load_err(dir: &Path) -> String {
    match load_model_dir(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn saves_and_loads_f32_f16_bf16_and_shards() {
    let (dir, params) = saved("roundtrip");
    let m = load_model_dir(&dir).unwrap();
    assert_eq!(m.config, tiny());
    assert_eq!(m.params.data, params.data, "f32 round trip is exact");

    for (dtype, rtol) in [(Dtype::F16, 1e-3), (Dtype::BF16, 8e-3)] {
        write_st(&dir.join(WEIGHTS_FILE), &tensors_of(&params, dtype));
        let m = load_model_dir(&dir).unwrap();
        for (a, b) in m.params.data.iter().zip(&params.data) {
            assert!((a - b).abs() <= rtol * b.abs() + 1e-6, "{dtype:?}: {a} vs {b}");
        }
    }

    // Sharded: two files and an index, no single model.safetensors.
    let shard_dir = tempdir("shards");
    std::fs::copy(dir.join(CONFIG_FILE), shard_dir.join(CONFIG_FILE)).unwrap();
    let all = tensors_of(&params, Dtype::F32);
    let (a, b) = all.split_at(all.len() / 2);
    write_st(&shard_dir.join("model-00001-of-00002.safetensors"), a);
    write_st(&shard_dir.join("model-00002-of-00002.safetensors"), b);
    let mut map = HashMap::new();
    for (n, ..) in a {
        map.insert(n.clone(), "model-00001-of-00002.safetensors");
    }
    for (n, ..) in b {
        map.insert(n.clone(), "model-00002-of-00002.safetensors");
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(shard_dir.join(WEIGHTS_INDEX_FILE), index.to_string()).unwrap();
    assert_eq!(load_model_dir(&shard_dir).unwrap().params.data, params.data);
    // A shard that is missing is named.
    std::fs::remove_file(shard_dir.join("model-00002-of-00002.safetensors")).unwrap();
    assert!(load_err(&shard_dir).contains("model-00002-of-00002.safetensors"));
}

#[test]
fn truncated_and_corrupt_weights_are_named_errors() {
    let (dir, _) = saved("corrupt");
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 4, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = load_err(&dir);
        assert!(e.contains(WEIGHTS_FILE), "cut {cut}: {e}");
        // A file cut short is said to be, by how much where its header
        // can still be read (it named "incomplete metadata" before).
        if cut >= 8 {
            assert!(e.contains("cut short"), "cut {cut}: {e}");
        }
        if cut == bytes.len() - 1 {
            assert!(e.contains(&format!("the file has {cut}")), "{e}");
        }
    }
    let mut garbage = bytes.clone();
    garbage[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &garbage).unwrap();
    let e = load_err(&dir);
    // Not a safetensors header at all: not taken for a file cut short.
    assert!(e.contains(WEIGHTS_FILE) && !e.contains("cut short"), "{e}");
    let mut bad_json = bytes.clone();
    bad_json[8..16].copy_from_slice(b"!!!!!!!!");
    std::fs::write(&path, &bad_json).unwrap();
    assert!(load_err(&dir).contains(WEIGHTS_FILE));
    std::fs::remove_file(&path).unwrap();
    assert!(load_err(&dir).contains("no model.safetensors"));
    // A file given where the model's folder goes is said so (the error
    // named a journal file under it: "Not a directory").
    let e = load_err(&dir.join(CONFIG_FILE));
    assert!(e.contains("config.json: is a file; a model is a folder"), "{e}");
}

#[test]
fn missing_extra_misshapen_and_nan_tensors_are_named() {
    let (dir, params) = saved("tensors");
    let path = dir.join(WEIGHTS_FILE);
    let all = tensors_of(&params, Dtype::F32);

    let missing: Vec<_> = all
        .iter()
        .filter(|t| t.0 != "model.layers.1.mlp.up_proj.weight")
        .cloned()
        .collect();
    write_st(&path, &missing);
    let e = load_err(&dir);
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("missing"),
        "{e}"
    );

    let mut extra = all.clone();
    extra.push((
        "model.layers.2.self_attn.q_proj.weight".into(),
        Dtype::F32,
        vec![1],
        vec![0; 4],
    ));
    write_st(&path, &extra);
    let e = load_err(&dir);
    assert!(
        e.contains("model.layers.2.self_attn.q_proj.weight") && e.contains("not part of this model"),
        "{e}"
    );

    let mut wrong = all.clone();
    let k = wrong
        .iter()
        .position(|t| t.0 == "model.layers.0.self_attn.k_proj.weight")
        .unwrap();
    wrong[k].2 = vec![16, 8]; // (8, 16) expected: same element count, transposed
    write_st(&path, &wrong);
    let e = load_err(&dir);
    assert!(
        e.contains("k_proj") && e.contains("[8, 16]") && e.contains("[16, 8]"),
        "{e}"
    );

    let mut nan = all.clone();
    nan[0].3[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    write_st(&path, &nan);
    let e = load_err(&dir);
    assert!(
        e.contains("model.embed_tokens.weight") && e.contains("element 2"),
        "{e}"
    );

    let mut ints = all.clone();
    ints[1].1 = Dtype::I32;
    write_st(&path, &ints);
    assert!(load_err(&dir).contains("dtype"));
}

#[test]
fn bad_configs_name_their_field() {
    let (dir, _) = saved("config");
    let cfg_path = dir.join(CONFIG_FILE);
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    for (field, value) in [
        ("num_attention_heads", serde_json::json!(3)),
        ("position_encoding", serde_json::json!("alibi")),
        ("num_key_value_heads", serde_json::json!(3)),
    ] {
        let mut v = good.clone();
        v[field] = value;
        std::fs::write(&cfg_path, v.to_string()).unwrap();
        let e = load_err(&dir);
        assert!(e.contains(field), "{field}: {e}");
    }
    std::fs::write(&cfg_path, "{\"hidden_size\": 16").unwrap();
    assert!(load_err(&dir).contains(CONFIG_FILE));
    // A config that disagrees with the weights: the tensor and both shapes are named.
    let mut v = good.clone();
    v["intermediate_size"] = serde_json::json!(32);
    std::fs::write(&cfg_path, v.to_string()).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("down_proj") && e.contains("[16, 32]") && e.contains("[16, 24]"),
        "{e}"
    );
}

#[test]
fn bad_tokens_and_head_scales_are_errors() {
    let params = Params::<f32>::random(&tiny(), 0.5, 3);
    let mut engine = CpuEngine::new(tiny(), params).unwrap();
    let ones = HeadScales::ones(&tiny());
    let opts = ForwardOptions::default();
    let e = pollster::block_on(engine.forward(&[1, 2, 50, 3], &ones, &opts))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token id 50") && e.contains("position 2") && e.contains("50"),
        "{e}"
    );
    let e = pollster::block_on(engine.forward(&[], &ones, &opts))
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
    for bad in [f32::NAN, 0.0, -1.0, f32::INFINITY] {
        let mut hs = ones.clone();
        hs.values[5] = bad;
        let e = pollster::block_on(engine.forward(&[1, 2, 3], &hs, &opts))
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer 1 head 1"), "{bad}: {e}");
        assert!(HeadScales::uniform(&tiny(), bad).is_err());
    }
    let wrong_shape = HeadScales {
        num_layers: 1,
        num_heads: 4,
        values: vec![1.0; 4],
        rule: Default::default(),
    };
    let e = pollster::block_on(engine.forward(&[1, 2, 3], &wrong_shape, &opts))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match"), "{e}");
}

#[test]
fn saving_never_leaves_a_partial_file() {
    let (dir, params) = saved("atomic");
    // Nothing but the finished files remains: no temporary names.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    // Saving a mismatched layout is refused before anything is written.
    let before = std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
    let mut other = tiny();
    other.num_layers = 3;
    assert!(save_model(&dir, &other, &params).is_err());
    assert_eq!(std::fs::read(dir.join(WEIGHTS_FILE)).unwrap(), before);
}

/// The browser's way in: a model from named files' bytes, unsharded or
/// sharded, and a clear error naming what is missing.
#[test]
fn a_model_opens_from_named_files_and_names_what_is_missing() {
    use nopescope::model::files::{model_from_files, read_model_files};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/nope-sotu");
    let files = read_model_files(&dir).unwrap();
    let (config, params, tok) = model_from_files(&files, std::path::Path::new("dropped")).unwrap();
    assert_eq!(config.num_layers, 4);
    assert!(tok.vocab_size() > 0);
    let (_, direct) = nopescope::model::files::model_from_bytes(
        &std::fs::read(dir.join("config.json")).unwrap(),
        &std::fs::read(dir.join("model.safetensors")).unwrap(),
        &dir,
    )
    .unwrap();
    assert_eq!(params.data, direct.data);
    // Names with folders count by their last part (as browsers give them).
    let nested: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, b)| (format!("some/folder/{n}"), b.clone()))
        .collect();
    assert!(model_from_files(&nested, std::path::Path::new("dropped")).is_ok());
    for missing in ["config.json", "tokenizer.json", "model.safetensors"] {
        let without: Vec<(String, Vec<u8>)> = files.iter().filter(|(n, _)| n != missing).cloned().collect();
        let e = model_from_files(&without, std::path::Path::new("dropped"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(missing.split('.').next().unwrap()), "{missing}: {e}");
    }
    // An index naming a shard that was not given.
    let mut sharded: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|(n, _)| n != "model.safetensors")
        .cloned()
        .collect();
    sharded.push((
        "model.safetensors.index.json".into(),
        br#"{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}"#.to_vec(),
    ));
    let e = model_from_files(&sharded, std::path::Path::new("dropped"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("model-00001-of-00002.safetensors"), "{e}");
    // Shard names that are not plain file names are refused by name (an
    // empty one read the folder itself: "Is a directory").
    for bad in ["", "../model.safetensors", ".hidden"] {
        let e = nopescope::model::files::shard_names(
            format!(r#"{{"weight_map": {{"model.embed_tokens.weight": "{bad}"}}}}"#).as_bytes(),
            std::path::Path::new("index.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("shard name `{bad}` must be a plain file name")),
            "{e}"
        );
    }
}
