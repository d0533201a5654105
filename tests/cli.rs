//! The command line end to end: init, info, eval (table and JSON), and the
//! errors a user meets (empty text, overwriting a model, bad head scales).

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nopescope"))
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nopescope-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn init_info_eval_round() {
    let dir = tempdir("round");
    let text_path = dir.join("text.txt");
    let full =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/text/sotu-validation.txt")).unwrap();
    std::fs::write(&text_path, &full[..60_000]).unwrap();
    let cfg_path = dir.join("config.json");
    std::fs::write(
        &cfg_path,
        r#"{"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 400, "max_position_embeddings": 64}"#,
    )
    .unwrap();
    let model = dir.join("model");
    let (ok, _, err) = run(bin()
        .args(["init", "--config"])
        .arg(&cfg_path)
        .arg("--text")
        .arg(&text_path)
        .arg("--out")
        .arg(&model));
    assert!(ok, "{err}");
    // A second init does not overwrite without --force.
    let (ok, _, err) = run(bin()
        .args(["init", "--config"])
        .arg(&cfg_path)
        .arg("--text")
        .arg(&text_path)
        .arg("--out")
        .arg(&model));
    assert!(!ok && err.contains("--force"), "{err}");

    let (ok, out, err) = run(bin().arg("info").arg(&model).arg("--json"));
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["training_length"], 64);
    assert_eq!(info["tokenizer_size"], 400);

    let (ok, out, err) = run(bin().arg("eval").arg(&model).arg("--text").arg(&text_path).args([
        "--lengths",
        "16,64,128",
        "--json",
        "--backend",
        "cpu",
    ]));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (r, len) in results.iter().zip([16, 64, 128]) {
        assert_eq!(r["length"], len);
        let loss = r["loss"].as_f64().unwrap();
        assert!((r["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-6 * loss.exp());
        // A random model is close to uniform over 400 tokens.
        assert!((loss - 400f64.ln()).abs() < 0.5, "loss {loss}");
        let ent = r["entropy_bits"].as_array().unwrap();
        assert_eq!(ent.len(), 2);
        assert_eq!(ent[0].as_array().unwrap().len(), 4);
        let mean = r["mean_entropy_bits"].as_f64().unwrap();
        assert!(mean > 0.0 && mean < (len as f64).log2());
    }
    // Longer windows spread attention over more keys: entropy grows.
    assert!(results[2]["mean_entropy_bits"].as_f64() > results[0]["mean_entropy_bits"].as_f64());

    let (ok, out, _) = run(bin().arg("eval").arg(&model).arg("--text").arg(&text_path).args([
        "--lengths",
        "32",
        "--uniform-scale",
        "1.5",
    ]));
    assert!(ok && out.contains("perplexity"), "{out}");

    // Errors a user meets, each named.
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let (ok, _, err) = run(bin()
        .arg("eval")
        .arg(&model)
        .arg("--text")
        .arg(&empty)
        .args(["--lengths", "32"]));
    assert!(!ok && err.contains("empty"), "{err}");
    let bad_scales = dir.join("hs.json");
    std::fs::write(&bad_scales, r#"{"head_scales": [[1, 1, 1, 1], [1, -1, 1, 1]]}"#).unwrap();
    let (ok, _, err) = run(bin()
        .arg("eval")
        .arg(&model)
        .arg("--text")
        .arg(&text_path)
        .args(["--lengths", "32", "--head-scales"])
        .arg(&bad_scales));
    assert!(
        !ok && err.contains("hs.json") && err.contains("layer 1 head 1"),
        "{err}"
    );
    let (ok, _, err) = run(bin()
        .arg("eval")
        .arg(&model)
        .arg("--text")
        .arg(&text_path)
        .args(["--lengths", "100000"]));
    assert!(!ok && err.contains("needs"), "{err}");
    let (ok, _, err) = run(bin().arg("info").arg(dir.join("nothing-here")));
    assert!(!ok && err.contains("nothing-here"), "{err}");
}
