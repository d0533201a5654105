//! Files dropped on the window: a text becomes "your text", a head-scales
//! file is loaded, anything else is a model to open (`jobs::open_model`).
//! Which is which goes by the names alone, before anything is read.

use super::models::ModelInfo;
use super::state::{InputKind, Tab, ViewState};
use super::text;

/// What a drop of files is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    /// One `.txt` or `.md` file: a text to look at.
    Text,
    /// One JSON file that is not one of a model folder's: head scales.
    Scales,
    /// Anything else: a model folder, or its files.
    Model,
}

/// The JSON files of a Hugging Face model folder (dropped alone, they are
/// a model's, to be refused as a model without its weights).
const MODEL_JSON: [&str; 6] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
];

/// Which kind the dropped files' names (paths or bare names) make.
pub fn drop_kind(names: &[String]) -> DropKind {
    let [one] = names else { return DropKind::Model };
    let file = one.rsplit(['/', '\\']).next().unwrap_or(one).to_ascii_lowercase();
    if file.ends_with(".txt") || file.ends_with(".md") {
        DropKind::Text
    } else if file.ends_with(".json") && !MODEL_JSON.contains(&file.as_str()) {
        DropKind::Scales
    } else {
        DropKind::Model
    }
}

/// A dropped text or scales file, read.
#[derive(Debug, Clone)]
pub struct DroppedFile {
    pub kind: DropKind,
    /// Its name as the user knows it (a path natively).
    pub name: String,
    pub bytes: Result<Vec<u8>, String>,
}

/// Applies a dropped text (as the explorer's input) or scales file (as the
/// scales in use); the outcome, said in the status bar.
pub fn apply(state: &mut ViewState, info: ModelInfo, file: DroppedFile) -> Result<String, String> {
    let DroppedFile { kind, name, bytes } = file;
    let bytes = bytes.map_err(|e| format!("{name}: {e}"))?;
    let body = String::from_utf8(bytes).map_err(|_| text::dropped_not_text(&name))?;
    match kind {
        DropKind::Text => {
            if body.trim().is_empty() {
                return Err(text::dropped_empty(&name));
            }
            let chars = body.chars().count();
            state.pasted_text = body;
            state.input = InputKind::Pasted;
            state.tab = Tab::Explore;
            Ok(text::dropped_text(&name, chars))
        }
        DropKind::Scales => {
            let loaded = super::views::scales::scales_from_json(&body, &name, info)?;
            state.scales.file = Some(loaded);
            state.scales.use_file = true;
            Ok(text::dropped_scales(&name))
        }
        DropKind::Model => Err(format!("{name}: not a text or a scales file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tell_a_text_scales_and_a_model() {
        let kind = |names: &[&str]| drop_kind(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(kind(&["/home/t/Lecture Notes.TXT"]), DropKind::Text);
        assert_eq!(kind(&["readme.md"]), DropKind::Text);
        assert_eq!(kind(&["C:\\runs\\head_scales-4L.json"]), DropKind::Scales);
        assert_eq!(kind(&["/m/config.json"]), DropKind::Model);
        assert_eq!(kind(&["tokenizer.json"]), DropKind::Model);
        assert_eq!(kind(&["/m/model.safetensors"]), DropKind::Model);
        assert_eq!(kind(&["/m"]), DropKind::Model);
        assert_eq!(kind(&["a.txt", "b.txt"]), DropKind::Model);
        assert_eq!(kind(&[]), DropKind::Model);
    }

    #[test]
    fn a_dropped_text_becomes_the_input_and_bad_files_say_why() {
        let info = ModelInfo::bundled(crate::app::state::ModelChoice::Nope).unwrap();
        let mut state = ViewState {
            tab: Tab::Passkey,
            ..Default::default()
        };
        let file = |kind, bytes: &[u8]| DroppedFile {
            kind,
            name: "notes.txt".into(),
            bytes: Ok(bytes.to_vec()),
        };
        let note = apply(
            &mut state,
            info,
            file(DropKind::Text, "Four score and seven years ago".as_bytes()),
        );
        assert_eq!(note, Ok(text::dropped_text("notes.txt", 30)));
        assert_eq!((state.input, state.tab), (InputKind::Pasted, Tab::Explore));
        assert_eq!(state.pasted_text, "Four score and seven years ago");
        let before = state.clone();
        assert_eq!(
            apply(&mut state, info, file(DropKind::Text, &[0xff, 0xfe, 0x41])),
            Err(text::dropped_not_text("notes.txt"))
        );
        assert_eq!(
            apply(&mut state, info, file(DropKind::Text, b" \n")),
            Err(text::dropped_empty("notes.txt"))
        );
        let unread = DroppedFile {
            kind: DropKind::Text,
            name: "notes.txt".into(),
            bytes: Err("permission denied".into()),
        };
        assert_eq!(
            apply(&mut state, info, unread),
            Err("notes.txt: permission denied".into())
        );
        assert_eq!(state, before, "a bad file changed the state");
        // Scales of the model's shape load; another shape says both.
        let scales = |json: &str| DroppedFile {
            kind: DropKind::Scales,
            name: "s.json".into(),
            bytes: Ok(json.as_bytes().to_vec()),
        };
        let row = "[1.5, 1.5, 1.5, 1.5]";
        let good = format!("{{\"head_scales\": [{row}, {row}, {row}, {row}]}}");
        assert_eq!(
            apply(&mut state, info, scales(&good)),
            Ok(text::dropped_scales("s.json"))
        );
        assert!(state.scales.use_file && state.scales.file.as_ref().is_some_and(|f| f.values == vec![1.5; 16]));
        let wrong = format!("{{\"head_scales\": [{row}]}}");
        assert_eq!(
            apply(&mut state, info, scales(&wrong)),
            Err(text::scales_shape(1, 4, 4, 4))
        );
    }
}
