//! The bundled models (assets/models/): they load, `eval` at the training
//! length gives the validation loss their training run recorded, and
//! `reproduce --quick` runs on them.

use std::path::{Path, PathBuf};
use std::process::Command;

const MODELS: [&str; 2] = ["nope-sotu", "rope-sotu"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nopescope"));
    c.current_dir(root());
    c
}

fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}

fn summary(model: &str) -> serde_json::Value {
    let path = root().join("assets/models").join(model).join("training.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn bundled_models_load_and_reproduce_their_validation_loss() {
    for model in MODELS {
        let dir = Path::new("assets/models").join(model);
        let (stdout, _) = run(bin().arg("info").arg(&dir).arg("--json"));
        let info: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let s = summary(model);
        let l = s["validation"]["length"].as_u64().unwrap();
        let windows = s["validation"]["windows"].as_u64().unwrap();
        assert_eq!(info["training_length"].as_u64().unwrap(), l);
        let (stdout, _) = run(bin()
            .arg("eval")
            .arg(&dir)
            .args([
                "--text",
                "assets/text/sotu-validation.txt",
                "--backend",
                "cpu",
                "--json",
            ])
            .arg("--lengths")
            .arg(l.to_string())
            .arg("--windows")
            .arg(windows.to_string()));
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let measured = v["results"][0]["loss"].as_f64().unwrap();
        let recorded = s["validation"]["loss"].as_f64().unwrap();
        assert!(
            (measured - recorded).abs() <= 1e-3 * recorded.abs(),
            "{model}: eval gives {measured}, training recorded {recorded}"
        );
    }
}

#[test]
fn reproduce_runs_on_the_smallest_lengths() {
    let out = std::env::temp_dir().join(format!("nopescope-reproduce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    run(bin()
        .args(["reproduce", "--quick", "--backend", "cpu", "--out"])
        .arg(&out));
    let md = std::fs::read_to_string(out.join("RESULTS.md")).unwrap();
    assert!(md.contains("Pass-key retrieval") && md.contains("| NoPE |"), "{md}");
    for f in ["entropy-by-position", "passkey-by-length"] {
        for ext in ["svg", "png"] {
            let p = out.join("figures").join(format!("{f}.{ext}"));
            assert!(std::fs::metadata(&p).unwrap().len() > 1000, "{}", p.display());
        }
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["lengths"].as_array().unwrap().len(), 2);
    // Every figure put in place, no temporary left beside them.
    let left: Vec<String> = std::fs::read_dir(out.join("figures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir_all(&out).unwrap();
}
