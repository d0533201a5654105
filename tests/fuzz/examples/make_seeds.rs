//! Writes the seed corpus of every fuzz target into `<out>/<target>/`:
//! valid inputs built from tests/fixtures/tiny-nope and from small generated
//! models, plus a few near misses (truncated, wrong shape, wrong dtype).
//!
//!   cargo run --manifest-path tests/fuzz/Cargo.toml --example make_seeds -- tests/fuzz/corpus
//!
//! (`tests/fuzz/make_seeds.sh` runs exactly that.) Paths are relative to the
//! repository root.

use std::path::{Path, PathBuf};

use nopescope::model::files::params_to_safetensors;
use nopescope::model::tokenizer::Tokenizer;
use nopescope::model::{HeadScales, HfConfig, Params};

/// The model_from_bytes input layout: LE u32 config length, config, weights.
fn frame(config: &[u8], weights: &[u8]) -> Vec<u8> {
    let mut v = (config.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(config);
    v.extend_from_slice(weights);
    v
}

/// A safetensors file written by hand, so dtypes and shapes can be wrong.
fn safetensors(tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut v = (h.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(&h);
    v.extend_from_slice(&data);
    v
}

/// All tensors of `params` in one dtype ("F32", "F16" or "BF16").
fn tensors_of(params: &Params<f32>, dtype: &'static str) -> Vec<(String, &'static str, Vec<usize>, Vec<u8>)> {
    params
        .layout
        .tensors
        .iter()
        .map(|t| {
            let xs = &params.data[t.range()];
            let bytes: Vec<u8> = match dtype {
                "F32" => xs.iter().flat_map(|x| x.to_le_bytes()).collect(),
                "F16" => xs.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                "BF16" => xs.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                _ => unreachable!(),
            };
            (t.name.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect()
}

fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 11,
        "max_position_embeddings": 16, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "position_encoding": "none"
    })
}

fn params_for(config: &serde_json::Value) -> Params<f32> {
    let hf: HfConfig = serde_json::from_value(config.clone()).unwrap();
    Params::random(&hf.validate().unwrap(), 0.02, 7)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn model_seeds(dir: &Path) {
    let fixture = Path::new("tests/fixtures/tiny-nope");
    let config = std::fs::read(fixture.join("config.json")).unwrap();
    let weights = std::fs::read(fixture.join("model.safetensors")).unwrap();
    write(dir, "fixture-tiny-nope", &frame(&config, &weights));

    let base = tiny_config();
    let js = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap();
    let p = params_for(&base);
    let f32_file = params_to_safetensors(&p).unwrap();
    write(dir, "tiny-f32", &frame(&js(&base), &f32_file));
    write(
        dir,
        "tiny-f16",
        &frame(&js(&base), &safetensors(&tensors_of(&p, "F16"))),
    );
    write(
        dir,
        "tiny-bf16",
        &frame(&js(&base), &safetensors(&tensors_of(&p, "BF16"))),
    );

    // Variants of the config, each with matching weights.
    let variants: [(&str, serde_json::Value); 4] = [
        ("tiny-tied", serde_json::json!({"tie_word_embeddings": true})),
        (
            "tiny-rope",
            serde_json::json!({"position_encoding": "rope", "rope_theta": 500.0}),
        ),
        (
            "tiny-mha",
            serde_json::json!({"num_key_value_heads": 2, "num_hidden_layers": 2}),
        ),
        ("tiny-bos", serde_json::json!({"bos_token_id": 3, "head_dim": 4})),
    ];
    for (name, patch) in variants {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        let pv = params_for(&c);
        write(dir, name, &frame(&js(&c), &params_to_safetensors(&pv).unwrap()));
    }
    // Tied checkpoints that store lm_head anyway.
    let mut tied = base.clone();
    tied["tie_word_embeddings"] = true.into();
    write(dir, "tiny-tied-with-lm-head", &frame(&js(&tied), &f32_file));

    // Near misses: each must be an error.
    write(dir, "truncated", &frame(&js(&base), &f32_file[..f32_file.len() / 2]));
    write(
        dir,
        "header-only",
        &frame(&js(&base), &f32_file[..64.min(f32_file.len())]),
    );
    write(dir, "no-weights", &frame(&js(&base), &[]));
    write(dir, "no-config", &frame(b"", &f32_file));
    let mut t = tensors_of(&p, "F32");
    t[0].2.reverse();
    write(dir, "wrong-shape", &frame(&js(&base), &safetensors(&t)));
    let mut t = tensors_of(&p, "F32");
    t.push(("model.rotary_emb.inv_freq".into(), "F32", vec![2], vec![0; 8]));
    t.push(("model.layers.9.mlp.up_proj.weight".into(), "F32", vec![1], vec![0; 4]));
    write(dir, "extra-tensor", &frame(&js(&base), &safetensors(&t)));
    let mut t = tensors_of(&p, "F32");
    t[1].3[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    write(dir, "nan-weight", &frame(&js(&base), &safetensors(&t)));
    let mut t = tensors_of(&p, "F32");
    let n = t[2].3.len();
    t[2] = (t[2].0.clone(), "F64", t[2].2.clone(), vec![0; n * 2]);
    write(dir, "f64-tensor", &frame(&js(&base), &safetensors(&t)));
    // Sizes near the limits of validation, with weights far too small for them.
    let mut huge = base.clone();
    huge["hidden_size"] = (1u64 << 24).into();
    huge["vocab_size"] = (1u64 << 24).into();
    huge["num_attention_heads"] = 1.into();
    huge["num_key_value_heads"] = 1.into();
    write(dir, "huge-config", &frame(&js(&huge), &f32_file));
}

fn head_scale_seeds(dir: &Path) {
    let fixture = std::fs::read("tests/fixtures/tiny-nope/head_scales.json").unwrap();
    write(dir, "fixture", &fixture);
    let hs = HeadScales {
        num_layers: 3,
        num_heads: 2,
        values: vec![1.0, 0.5, 2.0, 1.25, 3.0, 0.125],
        rule: Default::default(),
    };
    write(dir, "noted", hs.to_json(Some("seed".into())).as_bytes());
    write(dir, "one", b"{\"head_scales\": [[1.0]]}");
    write(dir, "ragged", b"{\"head_scales\": [[1.0], [1.0, 2.0]]}");
    write(dir, "zero", b"{\"head_scales\": [[1.0, 0.0]]}");
    write(dir, "empty", b"{\"head_scales\": []}");
}

fn tokenizer_seeds(dir: &Path) {
    let text = "the state of the union is strong.\nthe union of the states, 1790.\n".repeat(10);
    let tok = Tokenizer::train_byte_level_bpe(&text, 280).unwrap();
    write(dir, "byte-level-bpe", tok.to_json().unwrap().as_bytes());
    write(dir, "not-json", b"{not json");
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "tests/fuzz/corpus".into()));
    for (target, f) in [
        ("model_from_bytes", model_seeds as fn(&Path)),
        ("head_scales", head_scale_seeds),
        ("tokenizer", tokenizer_seeds),
    ] {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        f(&dir);
        let n = std::fs::read_dir(&dir).unwrap().count();
        println!("{}: {n} files", dir.display());
    }
}
