//! The command line end to end: init, info, eval (table and JSON), and the
//! errors a user meets (empty text, overwriting a model, bad head scales).

use std::path::{Path, PathBuf};
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

/// `eval` of `model` on `text` at `length` tokens with the scales file
/// `scales`, on the CPU engine.
fn eval_with_scales(model: &Path, text: &Path, scales: &Path, length: usize) -> (bool, String, String) {
    run(bin()
        .arg("eval")
        .arg(model)
        .arg("--text")
        .arg(text)
        .arg("--head-scales")
        .arg(scales)
        .args(["--lengths", &length.to_string(), "--backend", "cpu"]))
}

/// A small random model made by `init` in a fresh folder `name`, from the
/// first `text_bytes` of the shipped validation text, with training length
/// `training_length`: (the text, the config, the model folder).
fn init_model(name: &str, text_bytes: usize, training_length: usize) -> (PathBuf, PathBuf, PathBuf) {
    let dir = tempdir(name);
    let text_path = dir.join("text.txt");
    let full =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/text/sotu-validation.txt")).unwrap();
    std::fs::write(&text_path, &full[..text_bytes]).unwrap();
    let cfg_path = dir.join("config.json");
    std::fs::write(
        &cfg_path,
        format!(
            r#"{{"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 400, "max_position_embeddings": {training_length}}}"#
        ),
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
    (text_path, cfg_path, model)
}

/// A tokenizer far smaller than the model's vocabulary is said: where
/// `init` trained it on too short a text, and wherever the model is read
/// (it may be another model's tokenizer, whose numbers look plausible and
/// mean nothing). The model's own tokenizer of its full size says nothing.
#[test]
fn a_tokenizer_far_smaller_than_the_vocabulary_is_noted() {
    let (_, _, full) = init_model("tok-full", 40_000, 32);
    let (ok, _, err) = run(bin().arg("info").arg(&full));
    assert!(ok && !err.contains("note:"), "{err}");
    // 150 bytes of text make a tokenizer of fewer than 360 of 400 entries.
    let (text_path, _, model) = init_model("tok-small", 150, 32);
    let (ok, out, err) = run(bin().arg("info").arg(&model).arg("--json"));
    assert!(ok, "{err}");
    let entries = serde_json::from_str::<serde_json::Value>(&out).unwrap()["tokenizer_size"]
        .as_u64()
        .unwrap();
    assert!(entries < 360, "{entries} entries");
    assert!(
        err.contains(&format!(
            "the tokenizer has {entries} entries, the model's vocabulary 400"
        )),
        "{err}"
    );
    let (ok, _, err) =
        run(bin()
            .arg("eval")
            .arg(&model)
            .arg("--text")
            .arg(&text_path)
            .args(["--lengths", "16", "--backend", "cpu"]));
    assert!(ok && err.contains("note:") && err.contains("meaningless"), "{err}");
}

#[test]
fn init_info_eval_round() {
    let (text_path, cfg_path, model) = init_model("round", 60_000, 64);
    let dir = model.parent().unwrap().to_path_buf();
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
    assert_eq!(info["config"]["position_encoding"], serde_json::json!({"kind": "none"}));

    // `eval` of this model on its text, with `args`.
    let eval = |args: &[&str]| run(bin().arg("eval").arg(&model).arg("--text").arg(&text_path).args(args));
    let (ok, out, err) = eval(&["--lengths", "16,64,128", "--json", "--backend", "cpu"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    // The JSON says what it measured: the model, its L, the scales, the
    // engine and the text, beside the rows.
    assert_eq!(v["training_length"], 64);
    assert_eq!(v["model"], model.display().to_string());
    assert_eq!(v["scales"], "none (s = 1 for every head)");
    assert!(v["backend"].as_str().unwrap().starts_with("cpu"), "{v}");
    assert!(v["text_tokens"].as_u64().unwrap() > 128, "{v}");
    // The table marks each length against L; a bad --uniform-scale is the
    // flag's error.
    let (ok, table, err) = eval(&["--lengths", "32,128", "--backend", "cpu"]);
    assert!(ok && table.contains("x L"), "{table}{err}");
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!((rows[0][1], rows[1][1]), ("0.5", "2"), "{table}");
    let (ok, _, err) = eval(&["--lengths", "32", "--uniform-scale=-1"]);
    assert!(
        !ok && err.contains("--uniform-scale -1: scale -1 is not a positive number"),
        "{err}"
    );
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

    let (ok, out, _) = eval(&["--lengths", "32", "--uniform-scale", "1.5"]);
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

/// A tiny recipe in `dir`: 6 steps of a 2-layer model on a slice of the
/// validation text, with pass-key and copy documents in the mix.
fn tiny_recipe(dir: &std::path::Path, steps: usize) -> PathBuf {
    let full =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/text/sotu-validation.txt")).unwrap();
    std::fs::write(dir.join("train.txt"), &full[..40_000]).unwrap();
    std::fs::write(dir.join("val.txt"), &full[40_000..60_000]).unwrap();
    let recipe = format!(
        r#"{{"model": {{"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 400,
            "max_position_embeddings": 200}},
          "train_text": "train.txt", "validation_text": "val.txt",
          "batch_size": 2, "steps": {steps}, "peak_lr": 0.01, "warmup_steps": 2,
          "passkey_share": 0.5, "copy_share": 0.25, "hard_filler_share": 0.5, "min_doc_len": 64,
          "eval_every": 2, "checkpoint_every": 2, "eval_trials": 2, "validation_windows": 2, "seed": 3}}"#
    );
    let path = dir.join("recipe.json");
    std::fs::write(&path, recipe).unwrap();
    path
}

/// The losses column of a training log.
fn losses(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("train_log.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(9).collect::<Vec<_>>().join(","))
        .collect()
}

#[test]
fn train_resumed_run_matches_an_unbroken_one() {
    let dir = tempdir("train");
    let recipe = tiny_recipe(&dir, 6);
    let whole = dir.join("whole");
    let (ok, stdout, stderr) = run(bin().args(["train", "--config"]).arg(&recipe).arg("--out").arg(&whole));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("trained 6 steps"), "{stdout}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_log.csv",
        "training.json",
        "README.md",
    ] {
        assert!(whole.join(f).exists(), "{f} missing");
    }
    // The same run, stopped after 3 steps (the checkpoint then lands
    // between two scheduled ones) and resumed twice.
    let parts = dir.join("parts");
    let (ok, _, stderr) = run(bin()
        .args(["train", "--config"])
        .arg(&recipe)
        .arg("--out")
        .arg(&parts)
        .args(["--stop-after", "3"]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("continue with --resume"), "{stderr}");
    assert!(!parts.join("training.json").exists());
    // Without --resume the half-trained model is not overwritten.
    let (ok, _, stderr) = run(bin().args(["train", "--config"]).arg(&recipe).arg("--out").arg(&parts));
    assert!(!ok && stderr.contains("--resume"), "{stderr}");
    // A log that cannot be read stops the resume (it used to be replaced
    // by one holding only the rows after it), and is left as it was.
    let resume = || {
        run(bin()
            .args(["train", "--config"])
            .arg(&recipe)
            .arg("--out")
            .arg(&parts)
            .arg("--resume"))
    };
    let log = parts.join("train_log.csv");
    let good_log = std::fs::read(&log).unwrap();
    std::fs::write(&log, b"step,loss\n\xff\xfe\n").unwrap();
    let (ok, _, stderr) = resume();
    assert!(!ok && stderr.contains("train_log.csv"), "{stderr}");
    assert_eq!(std::fs::read(&log).unwrap(), b"step,loss\n\xff\xfe\n");
    std::fs::write(&log, good_log).unwrap();
    for _ in 0..2 {
        let (ok, _, stderr) = resume();
        assert!(ok, "{stderr}");
    }
    assert_eq!(losses(&whole), losses(&parts));
    assert_eq!(losses(&whole).len(), 6);
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(parts.join("model.safetensors")).unwrap()
    );
    // The recorded validation loss is what `eval` measures.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("training.json")).unwrap()).unwrap();
    let (ok, stdout, stderr) = run(bin()
        .arg("eval")
        .arg(&whole)
        .arg("--text")
        .arg(dir.join("val.txt"))
        .args(["--lengths", "200", "--windows", "2", "--backend", "cpu", "--json"]));
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let (a, b) = (
        v["results"][0]["loss"].as_f64().unwrap(),
        summary["validation"]["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-6 * b.abs(), "{a} vs {b}");
    // And passkey runs on it, table and JSON.
    let (ok, stdout, stderr) = run(bin().arg("passkey").arg(&whole).args([
        "--lengths",
        "180,200",
        "--trials",
        "3",
        "--backend",
        "cpu",
        "--json",
    ]));
    assert!(ok, "{stderr}");
    let p: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(p["results"][1]["length"], 200);
    assert!(p["results"][0]["accuracy"].as_f64().unwrap() <= 1.0);
    assert!(p["results"][0]["key_loss"].as_f64().unwrap() > 0.0);
    // Three trials at depths 0, 0.5 and 1 fill buckets 0, 5 and 9 of
    // ten; the others have no accuracy.
    let counts: Vec<u64> = p["results"][0]["trials_by_depth"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    let by_depth = p["results"][0]["accuracy_by_depth"].as_array().unwrap();
    for (a, &c) in by_depth.iter().zip(&counts) {
        assert_eq!(a.is_null(), c == 0, "{by_depth:?} {counts:?}");
    }
    let (ok, _, stderr) = run(bin()
        .arg("passkey")
        .arg(&whole)
        .args(["--lengths", "20", "--backend", "cpu"]));
    assert!(!ok && stderr.contains("too short"), "{stderr}");
}

/// A smoke run of `reproduce` never replaces the full results in docs/.
#[test]
fn reproduce_quick_needs_its_own_folder() {
    let (ok, _, stderr) = run(bin().args(["reproduce", "--quick"]));
    assert!(!ok && stderr.contains("--out"), "{stderr}");
}

#[test]
fn train_recipe_errors_name_the_field() {
    let dir = tempdir("recipe-errors");
    let recipe = tiny_recipe(&dir, 6);
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(&recipe, text.replace("\"batch_size\": 2", "\"batch_size\": 0")).unwrap();
    let (ok, _, stderr) = run(bin()
        .args(["train", "--config"])
        .arg(&recipe)
        .arg("--out")
        .arg(dir.join("m")));
    assert!(!ok && stderr.contains("batch_size"), "{stderr}");
    std::fs::write(&recipe, text.replace("\"seed\"", "\"sede\"")).unwrap();
    let (ok, _, stderr) = run(bin()
        .args(["train", "--config"])
        .arg(&recipe)
        .arg("--out")
        .arg(dir.join("m")));
    assert!(!ok && stderr.contains("sede"), "{stderr}");
    let (ok, _, stderr) = run(bin()
        .args(["train", "--config"])
        .arg(&recipe)
        .arg("--out")
        .arg(dir.join("m"))
        .arg("--resume"));
    assert!(!ok, "{stderr}");
}

/// A search stopped by Ctrl-C (SIGINT) keeps what it found: the scales so
/// far and their log are written, beside an earlier file of that name
/// rather than over it, the file says it was stopped (and `eval` says so
/// when it reads it), and the program ends as a stopped one does (130). A
/// folder that cannot be written is refused before the search, not after
/// it. Before 2026-12-03 a Ctrl-C lost the whole run, and an unwritable
/// folder was found only at the end.
#[cfg(target_os = "linux")]
#[test]
fn a_stopped_search_keeps_what_it_found() {
    use std::time::{Duration, Instant};
    let (text_path, _, model) = init_model("search-stop", 40_000, 32);
    let dir = model.parent().unwrap().to_path_buf();
    let out = dir.join("scales.json");
    std::fs::write(&out, "an earlier search's scales").unwrap();
    let mut child = bin()
        .arg("search")
        .arg(&model)
        .args(["--objective", "text", "--text"])
        .arg(&text_path)
        .args([
            "--length",
            "64",
            "--steps",
            "1000000",
            "--batch",
            "1",
            "--backend",
            "cpu",
            "--force",
            "--out",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The log's first write beside its place (after 10 s of search) says
    // the search runs, its Ctrl-C handled.
    let partial = dir.join("scales.csv.partial");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !partial.exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "the search did not start writing its log: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(130), "{err}");
    assert!(err.contains("stopped by the user after"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "an earlier search's scales");
    let stopped = dir.join("scales.stopped.json");
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stopped).unwrap()).unwrap();
    let steps = file["provenance"]["stopped_after"].as_u64().unwrap();
    assert!(steps >= 1, "{file}");
    assert!(file["note"].as_str().unwrap().contains("stopped by the user"), "{file}");
    let csv = std::fs::read_to_string(dir.join("scales.stopped.csv")).unwrap();
    assert_eq!(csv.lines().count() as u64, steps + 1, "{csv}");
    assert!(!partial.exists(), "the partial log is left behind");
    let (ok, _, err) = eval_with_scales(&model, &text_path, &stopped, 32);
    assert!(
        ok && err.contains(&format!("stopped by the user after {steps} steps")),
        "{err}"
    );
    // Even root cannot make a file in /proc: refused before the model loads.
    let (ok, _, err) =
        run(bin()
            .arg("search")
            .arg(&model)
            .args(["--length", "64", "--backend", "cpu", "--out", "/proc/scales.json"]));
    assert!(!ok && err.contains("a folder you can write"), "{err}");
}

/// `search` end to end on a fresh model: a per-head search writes the
/// scales (with rule and provenance) and its CSV log; a uniform search
/// prints its curve; bad settings are errors naming them and leave an
/// existing scales file as it was.
#[test]
fn search_writes_scales_and_refuses_bad_settings() {
    let (text_path, _, model) = init_model("search", 40_000, 32);
    let dir = model.parent().unwrap().to_path_buf();
    let out = dir.join("scales.json");
    let search = |extra: &[&str]| {
        run(bin()
            .arg("search")
            .arg(&model)
            .args(["--objective", "text", "--text"])
            .arg(&text_path)
            .arg("--out")
            .arg(&out)
            .args(["--backend", "cpu", "--force"])
            .args(extra))
    };
    let (ok, stdout, err) = search(&[
        "--length", "64", "--steps", "3", "--batch", "2", "--rule", "log-n", "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["result"]["steps_run"], 3);
    assert_eq!(v["replaced"], false);
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // The printed scales have the file's layout: [layer][head].
    assert_eq!(v["head_scales"], file["head_scales"]);
    assert_eq!(file["rule"]["rule"], "log-n");
    assert_eq!(file["rule"]["training_length"], 32);
    assert_eq!(file["provenance"]["objective"], "text");
    assert_eq!(file["provenance"]["target_length"], 64);
    let weights = nopescope::model::files::load_model_dir(&model).unwrap().params;
    assert_eq!(file["provenance"]["model_fingerprint"], weights.fingerprint());
    assert!(file["head_scales"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .all(|s| s.as_f64().unwrap() >= 1.0));
    let csv = std::fs::read_to_string(out.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    // The scales load where scales are used.
    let (ok, _, err) = eval_with_scales(&model, &text_path, &out, 64);
    assert!(ok, "{err}");
    assert!(!err.contains("searched on the model"), "{err}");

    let before = std::fs::read(&out).unwrap();
    for (args, word) in [
        (&["--length", "64", "--lr=-1"][..], "lr"),
        (&["--length", "64", "--lr", "NaN"][..], "lr"),
        (&["--length", "64", "--steps", "0"][..], "steps"),
        (&["--length", "1"][..], "below 2"),
        (
            &["--length", "64", "--rule", "yarn"][..],
            "invalid value 'yarn' for '--rule",
        ),
        (
            &["--length", "64", "--rule", "fitted"][..],
            "--rule fitted needs --rule-a",
        ),
        (&["--length", "100000"][..], "tokens; windows of 100000"),
    ] {
        let (ok, _, err) = search(args);
        assert!(!ok && err.contains(word), "{args:?}: {err}");
    }
    let (ok, _, err) = run(bin()
        .arg("search")
        .arg(&model)
        .args(["--objective", "copy", "--length", "64"])
        .arg("--out")
        .arg(&out));
    // Refused by the argument parser, with the values it takes.
    assert!(
        !ok && err.contains("invalid value 'copy' for '--objective") && err.contains("passkey, text"),
        "{err}"
    );
    // Where the results go is checked before the search: a log that would
    // be the scales file, a folder that does not exist.
    let mut same = bin();
    same.arg("search")
        .arg(&model)
        .args(["--objective", "text", "--text"])
        .arg(&text_path)
        .args(["--length", "64", "--backend", "cpu", "--out"])
        .arg(&out)
        .arg("--log")
        .arg(&out);
    let (ok, _, err) = run(&mut same);
    assert!(!ok && err.contains("the same file"), "{err}");
    // Written two ways, the same file still.
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let other_way = format!("{}/../{name}/scales.json", dir.display());
    let (ok, _, err) = search(&["--length", "64", "--log", &other_way]);
    assert!(!ok && err.contains("the same file"), "{err}");
    let (ok, _, err) = search(&["--length", "64", "--log", "/nonexistent-folder/log.csv"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    // The pass-key objective needs documents longer than its format.
    let (ok, _, err) = run(bin()
        .arg("search")
        .arg(&model)
        .args(["--length", "20", "--backend", "cpu", "--force"])
        .arg("--out")
        .arg(&out));
    assert!(!ok && err.contains("pass-key document needs at least"), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "a failed search changed the scales file"
    );

    // An existing file is replaced only with --force, refused before the
    // search otherwise; a model's own file never.
    let (ok, _, err) = run(bin()
        .arg("search")
        .arg(&model)
        .args(["--length", "64", "--backend", "cpu", "--out"])
        .arg(&out));
    assert!(!ok && err.contains("give --force"), "{err}");
    let config = model.join("config.json");
    let config_before = std::fs::read(&config).unwrap();
    let (ok, _, err) = search(
        &["--length", "64", "--log"][..]
            .iter()
            .copied()
            .chain([config.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(!ok && err.contains("a model's own file name"), "{err}");
    assert_eq!(std::fs::read(&config).unwrap(), config_before);
    assert_eq!(std::fs::read(&out).unwrap(), before);

    let (ok, stdout, err) = search(&["--scales", "uniform", "--length", "64", "--docs", "2", "--steps", "5"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("<- best"), "{stdout}");
    // An option this kind of search does not use is said, not ignored.
    assert!(err.contains("note: --steps is not used by --scales uniform"), "{err}");
    // Replacing an earlier file is said.
    assert!(err.contains("replacing the file of that name"), "{err}");

    // A scales file with a rule this program does not know, or the wrong shape.
    let bad = dir.join("bad.json");
    for text in [
        r#"{"head_scales": [[1,1,1,1],[1,1,1,1]], "rule": {"rule": "yarn"}}"#,
        r#"{"head_scales": [[1,1,1]]}"#,
    ] {
        std::fs::write(&bad, text).unwrap();
        let (ok, _, err) = eval_with_scales(&model, &text_path, &bad, 64);
        assert!(!ok && err.contains("head scales"), "{err}");
    }
}

/// Scales searched on one model run on another of the same shape, with a
/// note naming the model they were searched on (the file's provenance).
#[test]
fn scales_from_another_model_are_noted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let scales = root.join("assets/models/nope-sotu/head_scales-4L.json");
    let text = root.join("assets/text/sotu-validation.txt");
    let eval = |model: &str| eval_with_scales(&root.join("assets/models").join(model), &text, &scales, 32);
    let (ok, _, err) = eval("rope-sotu");
    assert!(ok, "{err}");
    assert!(
        err.contains("searched on the model assets/models/nope-sotu") && err.contains("rope-sotu"),
        "{err}"
    );
    let (ok, _, err) = eval("nope-sotu");
    assert!(ok && !err.contains("searched on the model"), "{err}");
}

/// Where a scales file records its weights' fingerprint (searches since
/// 2026-12-03), the weights decide, not the folder's name: other weights
/// in the same folder (a model retrained there) are noted, the same
/// weights under another folder (a copy) are not.
#[test]
fn scales_from_other_weights_are_noted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("assets/models/nope-sotu");
    let text = root.join("assets/text/sotu-validation.txt");
    let ours = nopescope::model::files::load_model_dir(&model)
        .unwrap()
        .params
        .fingerprint();
    let dir = tempdir("fingerprint");
    let with = |name: &str, folder: &str, fingerprint: &str| {
        let path = dir.join(name);
        let json = serde_json::json!({
            "head_scales": vec![vec![1.2; 4]; 4],
            "provenance": {"model": folder, "model_fingerprint": fingerprint},
        });
        std::fs::write(&path, json.to_string()).unwrap();
        eval_with_scales(&model, &text, &path, 32)
    };
    let (ok, _, err) = with("retrained.json", "assets/models/nope-sotu", "0123456789abcdef");
    assert!(ok, "{err}");
    assert!(
        err.contains("searched on other weights")
            && err.contains("fingerprint 0123456789abcdef")
            && err.contains(&ours),
        "{err}"
    );
    let (ok, _, err) = with("copied.json", "/elsewhere/a-copy", &ours);
    assert!(ok && !err.contains("note: these scales"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Without a desktop session (no XDG_RUNTIME_DIR, as in a batch job) the
/// GPU listing prints no "error:" of a library's: Mesa's device-select
/// layer made Wayland print one per enumeration though nothing failed.
#[test]
fn no_library_errors_without_a_desktop_session() {
    let (ok, _, err) = run(bin()
        .args(["info", "--devices"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("NODEVICE_SELECT"));
    assert!(ok, "{err}");
    assert!(!err.contains("error:"), "{err}");
}

/// `init --config` given a training recipe (both it and model configs sit
/// in assets/configs/) says so and writes nothing.
#[test]
fn init_names_a_recipe_given_for_a_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempdir("init-recipe").join("model");
    let (ok, _, stderr) = run(bin()
        .arg("init")
        .arg("--config")
        .arg(root.join("assets/configs/nope-sotu.train.json"))
        .arg("--text")
        .arg(root.join("assets/text/sotu-validation.txt"))
        .arg("--out")
        .arg(&out));
    assert!(!ok && !out.exists());
    assert!(
        stderr.contains("a training recipe") && stderr.contains("`train --config` takes a recipe"),
        "{stderr}"
    );
}

/// `passkey --trials` and `search --docs` count documents; each takes the
/// other's name too.
#[test]
fn passkey_and_search_take_each_others_name_for_documents() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, stdout, stderr) = run(bin().arg("passkey").arg(root.join("assets/models/nope-sotu")).args([
        "--lengths",
        "128",
        "--docs",
        "3",
        "--backend",
        "cpu",
        "--json",
    ]));
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["results"][0]["trials"], 3, "{v}");
    let (ok, help, _) = run(bin().args(["search", "--help"]));
    assert!(ok && help.contains("[alias: --trials]"), "{help}");
    // Given to a per-head search, which takes no documents, it is noted
    // under both names (before the missing model is).
    let (ok, _, err) = run(bin().args(["search", "no-such-model", "--length", "512", "--trials", "2"]));
    assert!(
        !ok && err.contains("note: --docs (--trials) is not used by --scales heads"),
        "{err}"
    );
}

/// `eval` and `passkey` take a per-position rule: `--uniform-scale 1
/// --rule log-n` reads as a scales file of ones under that rule does, and
/// differs from plain NoPE; a fitted rule needs its a, and a file's own
/// rule is not silently replaced. Before 2026-12-03 only `search` had
/// `--rule`.
#[test]
fn eval_and_passkey_take_a_per_position_rule() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("assets/models/nope-sotu");
    let text = root.join("assets/text/sotu-validation.txt");
    let dir = tempdir("rule");
    let eval = |extra: &[&str]| {
        let (ok, stdout, stderr) = run(bin()
            .arg("eval")
            .arg(&model)
            .arg("--text")
            .arg(&text)
            .args(["--lengths", "1024", "--windows", "1", "--backend", "cpu", "--json"])
            .args(extra));
        assert!(ok, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        (
            v["results"][0]["loss"].as_f64().unwrap(),
            v["scales"].as_str().unwrap().to_string(),
        )
    };
    let (plain, _) = eval(&[]);
    let (ruled, named) = eval(&["--uniform-scale", "1", "--rule", "log-n"]);
    assert_eq!(named, "uniform s = 1, rule log-n (L = 256)");
    let log_n = r#"{"rule": {"rule": "log-n", "training_length": 256}, "head_scales": [[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1]]}"#;
    let file = dir.join("ones-log-n.json");
    std::fs::write(&file, log_n).unwrap();
    let (from_file, _) = eval(&["--head-scales", file.to_str().unwrap()]);
    assert_eq!(ruled, from_file, "the rule given and the file's rule");
    assert!(
        (ruled - plain).abs() > 1e-3,
        "log-n at 4L changed nothing: {ruled} vs {plain}"
    );
    // Errors name the flag, before the model loads (a missing folder).
    let refuse = |args: &[&str]| {
        let (ok, _, stderr) = run(bin().args(["passkey", "no-such-model", "--lengths", "512"]).args(args));
        assert!(!ok);
        stderr
    };
    let err = refuse(&["--rule", "fitted"]);
    assert!(err.contains("--rule fitted needs --rule-a"), "{err}");
    let err = refuse(&["--rule-a", "0.2"]);
    assert!(err.contains("--rule-a 0.2 is the fitted rule's"), "{err}");
    let (ok, _, err) = run(bin()
        .arg("passkey")
        .arg(&model)
        .args([
            "--lengths",
            "512",
            "--trials",
            "1",
            "--backend",
            "cpu",
            "--rule",
            "fitted",
            "--rule-a",
            "0.2",
        ])
        .arg("--head-scales")
        .arg(&file));
    assert!(
        !ok && err.contains("--rule fitted (a = 0.2, L = 256): ") && err.contains("has its own rule, log-n (L = 256)"),
        "{err}"
    );
    // The file's own rule, given again, is no conflict; nor are no scales
    // under a rule.
    let passkey = |extra: &[&str]| {
        run(bin()
            .arg("passkey")
            .arg(&model)
            .args(["--lengths", "512", "--trials", "1", "--backend", "cpu", "--json"])
            .args(extra))
    };
    let (ok, _, err) = passkey(&["--rule", "log-n", "--head-scales", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, out, err) = passkey(&["--rule", "log-n"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["scales"], "s = 1 for every head, rule log-n (L = 256)");
    // And the values themselves, as a head-scales file has them.
    assert_eq!(v["head_scales"], serde_json::json!(vec![vec![1.0; 4]; 4]));
    assert_eq!(v["rule"], serde_json::json!({"rule": "log-n", "training_length": 256}));
    std::fs::remove_dir_all(&dir).ok();
}
