//! The desktop app's own copy of what it keeps between runs (the view
//! state, the Share panel's address). eframe also keeps them, in a file it
//! truncates and rewrites in place: a crash or a full disk during that
//! write loses them. This copy is written to a temporary file and renamed
//! (`files::write_atomic`), so it holds the last whole save, and it is
//! read first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::model::files;

/// A JSON object of strings in one file, as eframe's storage holds them.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    values: BTreeMap<String, String>,
    /// Changed since the last write.
    dirty: bool,
}

impl StateFile {
    /// Where the desktop app keeps it: `state.json` in eframe's folder for
    /// the app (on Linux `~/.local/share/nopescope`).
    pub fn default_path() -> Option<PathBuf> {
        eframe::storage_dir("nopescope").map(|dir| dir.join("state.json"))
    }

    /// The file at `path`: empty where there is none yet. One that cannot
    /// be read or is not a JSON object of strings is an error naming it.
    pub fn open(path: PathBuf) -> Result<Self, String> {
        let values = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a saved nopescope state ({e})", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: cannot be read ({e})", path.display())),
        };
        Ok(StateFile {
            path,
            values,
            dirty: false,
        })
    }

    /// `open`, and where the file is unreadable it is moved aside (to
    /// `<name>.unreadable`, or `.unreadable.N` beside an earlier one;
    /// never written over) and an empty one starts in its place; the
    /// message says so.
    pub fn open_or_set_aside(path: PathBuf) -> (Self, Option<String>) {
        let e = match Self::open(path.clone()) {
            Ok(file) => return (file, None),
            Err(e) => e,
        };
        let aside = (0..)
            .map(|n| match n {
                0 => path.with_extension("json.unreadable"),
                n => path.with_extension(format!("json.unreadable.{n}")),
            })
            .find(|p| !p.exists())
            .expect("a free name");
        let (path, note) = match std::fs::rename(&path, &aside) {
            Ok(()) => (path, format!("{e}; kept as {} and started afresh", aside.display())),
            // Not written over: this run saves nothing.
            Err(r) => (
                PathBuf::new(),
                format!("{e}; it could not be moved aside ({r}), so this run saves nothing over it"),
            ),
        };
        let file = StateFile {
            path,
            values: BTreeMap::new(),
            dirty: false,
        };
        (file, Some(note))
    }

    /// Whether it holds anything (a first run's does not).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Writes it, if changed, whole or not at all.
    pub fn write(&mut self) -> Result<(), String> {
        if !self.dirty || self.path.as_os_str().is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let json = serde_json::to_vec_pretty(&self.values).map_err(|e| e.to_string())?;
        // A state file kept as a link (a dotfiles folder) is written
        // where it points: written files refuse to replace a link.
        let path = match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::canonicalize(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?
            }
            _ => self.path.clone(),
        };
        files::write_atomic(&path, &json).map_err(|e| e.to_string())?;
        self.dirty = false;
        Ok(())
    }
}

impl eframe::Storage for StateFile {
    fn get_string(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    fn set_string(&mut self, key: &str, value: String) {
        if self.values.get(key) != Some(&value) {
            self.values.insert(key.to_string(), value);
            self.dirty = true;
        }
    }

    fn remove_string(&mut self, key: &str) {
        self.dirty |= self.values.remove(key).is_some();
    }

    fn flush(&mut self) {
        if let Err(e) = self.write() {
            eprintln!("nopescope: the app's state was not saved: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eframe::Storage;

    /// A state file kept as a link is saved where it points, the link left
    /// in place (written files refuse to replace a link).
    #[cfg(unix)]
    #[test]
    fn a_linked_state_file_is_saved_through_its_link() {
        let dir = std::env::temp_dir().join(format!("nopescope-state-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (target, link) = (dir.join("dotfiles-state.json"), dir.join("state.json"));
        std::fs::write(&target, b"{}").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut file = StateFile::open(link.clone()).unwrap();
        file.set_string("k", "v".into());
        file.write().unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(StateFile::open(target).unwrap().get_string("k").as_deref(), Some("v"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_file_keeps_what_was_set_and_sets_an_unreadable_one_aside() {
        let dir = std::env::temp_dir().join(format!("nopescope-state-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("state.json");
        let mut file = StateFile::open(path.clone()).unwrap();
        assert!(file.is_empty());
        file.set_string("k", "v".into());
        file.flush();
        let again = StateFile::open(path.clone()).unwrap();
        assert_eq!(again.get_string("k").as_deref(), Some("v"));
        // No temporary left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);

        std::fs::write(&path, b"{\"k\": ").unwrap();
        let e = StateFile::open(path.clone()).unwrap_err();
        assert!(e.contains("state.json: not a saved nopescope state"), "{e}");
        let (mut fresh, note) = StateFile::open_or_set_aside(path.clone());
        let note = note.unwrap();
        assert!(
            note.contains("state.json.unreadable") && note.contains("started afresh"),
            "{note}"
        );
        assert!(fresh.is_empty());
        assert_eq!(
            std::fs::read(path.with_extension("json.unreadable")).unwrap(),
            b"{\"k\": "
        );
        fresh.set_string("k", "w".into());
        fresh.flush();
        assert_eq!(
            StateFile::open(path.clone()).unwrap().get_string("k").as_deref(),
            Some("w")
        );
        // A second unreadable one goes beside the first.
        std::fs::write(&path, b"[]").unwrap();
        let (_, note) = StateFile::open_or_set_aside(path.clone());
        assert!(note.unwrap().contains("state.json.unreadable.1"));
        assert_eq!(
            std::fs::read(path.with_extension("json.unreadable")).unwrap(),
            b"{\"k\": "
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
