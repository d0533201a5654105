//! Model files in the Hugging Face layout: `config.json`, `model.safetensors`
//! (or shards listed in `model.safetensors.index.json`), `tokenizer.json`.
//! Weights load from f32, f16 or bf16 into f32; saving writes f32 under the
//! same names, so trained models round-trip. Every write goes to a temporary
//! name first and is renamed into place, so a crash never leaves half a file
//! where a good one was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::config::{HfConfig, ModelConfig};
use super::error::{Error, Result};
use super::params::{ParamLayout, Params};
use super::tokenizer::Tokenizer;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Tensors some checkpoints carry that are not weights (rotary tables).
fn is_ignorable(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

/// What the loader can store a weight as: f32 (the engines' reference
/// precision), or f16 (for a GPU engine that keeps its weights in f16, so
/// that a bf16 or f16 checkpoint never needs an f32 copy on the host).
pub trait Stored: Copy + Default {
    fn from_f32(x: f32) -> Self;
    fn from_f16(x: half::f16) -> Self;
    fn from_bf16(x: half::bf16) -> Self;
    fn is_finite(self) -> bool;
    fn to_f64(self) -> f64;
}

impl Stored for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
    fn from_f16(x: half::f16) -> Self {
        x.to_f32()
    }
    fn from_bf16(x: half::bf16) -> Self {
        x.to_f32()
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

/// Past f16's range (65504) a weight becomes infinite, which the loader
/// refuses as it refuses any non-finite weight.
impl Stored for half::f16 {
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
    fn from_f16(x: half::f16) -> Self {
        x
    }
    fn from_bf16(x: half::bf16) -> Self {
        half::f16::from_f32(x.to_f32())
    }
    fn is_finite(self) -> bool {
        half::f16::is_finite(self)
    }
    fn to_f64(self) -> f64 {
        half::f16::to_f64(self)
    }
}

/// Fills `params` from one safetensors file's bytes. `seen` marks tensors
/// already loaded (across shards); `path` is only used in messages.
pub fn read_safetensors(
    bytes: &[u8],
    path: &Path,
    config: &ModelConfig,
    params: &mut Params<f32>,
    seen: &mut [bool],
) -> Result<()> {
    read_safetensors_as(bytes, path, config, &params.layout, &mut params.data, seen)
}

/// `read_safetensors` into `data` (the flat `layout`) stored as `T`.
pub fn read_safetensors_as<T: Stored>(
    bytes: &[u8],
    path: &Path,
    config: &ModelConfig,
    layout: &ParamLayout,
    data: &mut [T],
    seen: &mut [bool],
) -> Result<()> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: match described_size(bytes) {
            Some(size) if size > bytes.len() => format!(
                "cut short: its header describes {size} bytes, the file has {} (a download that stopped?)",
                bytes.len()
            ),
            _ => format!("not a readable safetensors file ({} bytes): {e}", bytes.len()),
        },
    })?;
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    for name in names {
        if is_ignorable(&name) {
            continue;
        }
        let index = layout.tensors.iter().position(|t| t.name == name);
        let Some(index) = index else {
            if config.tie_word_embeddings && name == "lm_head.weight" {
                // Tied checkpoints sometimes store the shared matrix twice.
                continue;
            }
            return Err(Error::ExtraTensor {
                path: path.to_path_buf(),
                name,
                layers: config.num_layers,
                tied: config.tie_word_embeddings,
            });
        };
        let view = st.tensor(&name).map_err(|e| Error::BadTensor {
            path: path.to_path_buf(),
            name: name.clone(),
            message: e.to_string(),
        })?;
        let spec = layout.tensors[index].clone();
        if view.shape() != spec.shape.as_slice() {
            return Err(Error::Shape {
                path: path.to_path_buf(),
                name,
                expected: spec.shape,
                found: view.shape().to_vec(),
            });
        }
        if seen[index] {
            return Err(Error::BadTensor {
                path: path.to_path_buf(),
                name,
                message: "appears twice (in two shards)".into(),
            });
        }
        let dst = &mut data[spec.range()];
        let raw = view.data();
        let bad = |message: String| Error::BadTensor {
            path: path.to_path_buf(),
            name: name.clone(),
            message,
        };
        match view.dtype() {
            Dtype::F32 => {
                for (d, b) in dst.iter_mut().zip(raw.chunks_exact(4)) {
                    *d = T::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            Dtype::F16 => {
                for (d, b) in dst.iter_mut().zip(raw.chunks_exact(2)) {
                    *d = T::from_f16(half::f16::from_le_bytes([b[0], b[1]]));
                }
            }
            Dtype::BF16 => {
                for (d, b) in dst.iter_mut().zip(raw.chunks_exact(2)) {
                    *d = T::from_bf16(half::bf16::from_le_bytes([b[0], b[1]]));
                }
            }
            other => return Err(bad(format!("dtype {other:?} is not supported (f32, f16 or bf16)"))),
        }
        if let Some(i) = dst.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "element {i} is {} as stored (weights must be finite{})",
                dst[i].to_f64(),
                if std::mem::size_of::<T>() == 2 {
                    "; f16 holds at most 65504 in magnitude"
                } else {
                    ""
                }
            )));
        }
        seen[index] = true;
    }
    Ok(())
}

/// The size a safetensors file's own header describes (8 bytes of header
/// length, the header, then the data up to the last tensor's end), when
/// `bytes` start with a header that can be read; it may say more than the
/// file holds, as a header needs only its first bytes.
fn described_size(bytes: &[u8]) -> Option<usize> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    // A safetensors header: JSON of at most 100 MB (the format's limit);
    // another kind of file renamed is not "cut short".
    if n > 100_000_000 || bytes.get(8) != Some(&b'{') {
        return None;
    }
    let header_end = n + 8;
    let Some(header) = bytes.get(8..header_end) else {
        // The header itself is cut: at least that much was meant.
        return Some(header_end);
    };
    let header: serde_json::Value = serde_json::from_slice(header).ok()?;
    let data_end = header
        .as_object()?
        .values()
        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
        .max()?;
    header_end.checked_add(usize::try_from(data_end).ok()?)
}

/// Refuses, before anything is allocated for them, parameters that `bytes`
/// bytes of weights cannot hold: every weight takes at least 2 bytes (f16,
/// bf16). A wrong or hostile config must not make the loader allocate the
/// model it describes (hidden_size and vocab_size of 2^24 are 2^48 weights).
fn check_weights_size(config: &ModelConfig, config_path: &Path, bytes: u64, path: &Path) -> Result<()> {
    let n = config.num_params().unwrap_or(usize::MAX);
    let needed = (n as u64).saturating_mul(2);
    if needed > bytes {
        return Err(Error::Safetensors {
            path: path.to_path_buf(),
            message: format!(
                "{bytes} bytes cannot hold the {n} parameters that {} describes (at least {needed} bytes at 2 bytes a weight); config and weights do not belong together, or the weights file is cut short (a download that stopped?)",
                config_path.display()
            ),
        });
    }
    Ok(())
}

/// Checks that every tensor of the layout was loaded.
pub fn check_complete(layout: &ParamLayout, seen: &[bool], path: &Path) -> Result<()> {
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(Error::MissingTensor {
            path: path.to_path_buf(),
            name: layout.tensors[i].name.clone(),
        });
    }
    Ok(())
}

/// Parses config bytes and weights bytes (one unsharded file); the path in
/// messages is `name`. Used by the browser, which has bytes and no files.
pub fn model_from_bytes(config_json: &[u8], weights: &[u8], name: &Path) -> Result<(ModelConfig, Params<f32>)> {
    let hf: HfConfig = serde_json::from_slice(config_json).map_err(|source| Error::Json {
        path: name.join(CONFIG_FILE),
        source,
    })?;
    let config = hf.validate()?;
    let path = name.join(WEIGHTS_FILE);
    check_weights_size(&config, &name.join(CONFIG_FILE), weights.len() as u64, &path)?;
    let mut params = Params::zeros(ParamLayout::new(&config));
    let mut seen = vec![false; params.layout.tensors.len()];
    read_safetensors(weights, &path, &config, &mut params, &mut seen)?;
    check_complete(&params.layout, &seen, &path)?;
    Ok((config, params))
}

/// The shard files an index (`model.safetensors.index.json`) names, sorted,
/// each once; a name that is not a plain file name is an error.
pub fn shard_names(index: &[u8], index_path: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let idx: Index = serde_json::from_slice(index).map_err(|source| Error::Json {
        path: index_path.to_path_buf(),
        source,
    })?;
    let mut shards: Vec<String> = idx.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    for shard in &shards {
        if shard.is_empty() || shard.contains(['/', '\\']) || shard.starts_with('.') {
            return Err(Error::Safetensors {
                path: index_path.to_path_buf(),
                message: format!("shard name `{shard}` must be a plain file name in the model folder"),
            });
        }
    }
    Ok(shards)
}

/// A model given as named files' bytes (what a browser gets from picked or
/// dropped files, and what the app reads from a folder): `config.json`,
/// `tokenizer.json`, and `model.safetensors` or the shards named by
/// `model.safetensors.index.json`. Names may carry folders (only the last
/// part counts). `name` is the model's name in messages.
pub fn model_from_files(files: &[(String, Vec<u8>)], name: &Path) -> Result<(ModelConfig, Params<f32>, Tokenizer)> {
    let base = |n: &str| n.rsplit(['/', '\\']).next().unwrap_or(n).to_string();
    let find = |want: &str| files.iter().find(|(n, _)| base(n) == want).map(|(_, b)| b.as_slice());
    let missing = |what: &str| Error::Input(format!("{}: no {what} among the files given", name.display()));
    let config_bytes = find(CONFIG_FILE).ok_or_else(|| missing(CONFIG_FILE))?;
    let hf: HfConfig = serde_json::from_slice(config_bytes).map_err(|source| Error::Json {
        path: name.join(CONFIG_FILE),
        source,
    })?;
    let config = hf.validate()?;
    let tok_path = name.join(TOKENIZER_FILE);
    let tokenizer = Tokenizer::from_bytes(find(TOKENIZER_FILE).ok_or_else(|| missing(TOKENIZER_FILE))?, &tok_path)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::Tokenizer {
            path: tok_path,
            message: format!(
                "has {} entries, more than the model's vocab_size {}",
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        });
    }
    if let Some(weights) = find(WEIGHTS_FILE) {
        let (_, params) = model_from_bytes(config_bytes, weights, name)?;
        return Ok((config, params, tokenizer));
    }
    let index_path = name.join(WEIGHTS_INDEX_FILE);
    let index = find(WEIGHTS_INDEX_FILE).ok_or_else(|| missing(&format!("{WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE}")))?;
    let shards = shard_names(index, &index_path)?;
    let mut parts = Vec::with_capacity(shards.len());
    for shard in &shards {
        parts.push((
            name.join(shard),
            find(shard).ok_or_else(|| missing(&format!("shard {shard}")))?,
        ));
    }
    let total = parts.iter().map(|(_, b)| b.len() as u64).sum();
    check_weights_size(&config, &name.join(CONFIG_FILE), total, &index_path)?;
    let mut params = Params::zeros(ParamLayout::new(&config));
    let mut seen = vec![false; params.layout.tensors.len()];
    for (path, bytes) in parts {
        read_safetensors(bytes, &path, &config, &mut params, &mut seen)?;
    }
    check_complete(&params.layout, &seen, &index_path)?;
    Ok((config, params, tokenizer))
}

/// Serializes all parameters as f32 safetensors under Hugging Face names.
pub fn params_to_safetensors(params: &Params<f32>) -> Result<Vec<u8>> {
    let mut views = Vec::with_capacity(params.layout.tensors.len());
    for t in &params.layout.tensors {
        let bytes: &[u8] = bytemuck::cast_slice(&params.data[t.range()]);
        let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes).map_err(|e| Error::BadTensor {
            path: PathBuf::from(WEIGHTS_FILE),
            name: t.name.clone(),
            message: e.to_string(),
        })?;
        views.push((t.name.clone(), view));
    }
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::tensor::serialize(views, Some(meta)).map_err(|e| Error::Safetensors {
        path: PathBuf::from(WEIGHTS_FILE),
        message: e.to_string(),
    })
}

/// A model read from a directory.
pub struct ModelDir {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub params: Params<f32>,
    pub tokenizer: Option<Tokenizer>,
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use std::io::Write;

    /// A temporary name for `path` in its folder, to write and then rename
    /// over it: hidden, unique per process and per call (two writers of one
    /// file, two processes or two threads of one, never share a
    /// temporary), and with `path`'s extension (writers that pick the
    /// format by it, as the figures' PNG encoder does, see the right one).
    pub fn temp_beside(path: &Path) -> PathBuf {
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let stem = path
            .file_stem()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        dir.join(format!(".{stem}.tmp-{}-{call}{ext}", std::process::id()))
    }

    /// Writes `bytes` to `path` through a temporary file in the same folder
    /// and a rename, so readers see the old file or the new one, never half.
    pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
        write_atomic_with(path, |f| f.write_all(bytes))
    }

    /// `write_atomic` for contents written piece by piece (a file larger
    /// than is worth holding in memory whole).
    pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
        let tmp = write_temp(path, write)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e)
        })
    }

    /// Whether files can be made in `folder`, found by making an empty
    /// one there (a new name, never through a link) and removing it:
    /// before long work whose result goes there (a read-only model
    /// folder; a disk with no room left is found only at the write).
    pub fn check_writable(folder: &Path) -> Result<()> {
        let probe = temp_beside(&folder.join(".nopescope-write-check"));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| Error::io(folder, e))?;
        // Made, so the folder takes files; a probe left behind is only
        // untidy.
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    /// Refuses to write over anything but a plain file: the rename would
    /// put a plain file in place of a device (`/dev/null`), a pipe or a
    /// symbolic link (not writing through it to its target), and report
    /// success.
    pub fn check_replaceable(path: &Path) -> Result<()> {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        let kind = meta.file_type();
        let what = if kind.is_file() {
            return Ok(());
        } else if kind.is_symlink() {
            "a symbolic link: nopescope writes a new file and renames it into place, which would replace the link, not its target; give the target's own path"
        } else if kind.is_dir() {
            "a folder; give a file name"
        } else {
            "not a plain file (a device, pipe or socket): nopescope writes a new file and renames it into place, which would replace it; give a file name"
        };
        Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("is {what}")),
        ))
    }

    /// Writes `path`'s new contents to a temporary beside it (`temp_beside`)
    /// and syncs it; returns the temporary, or removes it on failure.
    fn write_temp(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<PathBuf> {
        check_replaceable(path)?;
        let tmp = temp_beside(path);
        let result = (|| -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            write(&mut f)?;
            f.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        match result {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(Error::io(path, e))
            }
        }
    }

    /// Writes several files as one set: each to a temporary beside it
    /// first, and only once all are written and synced are they put in
    /// place, one rename after another. A failure while writing (a full
    /// disk, a missing folder) leaves every file as it was and no
    /// temporary behind. So does a rename refused halfway (a target made
    /// read-only or a folder meanwhile): the old files are kept under a
    /// second name (a hard link, no copy) until the set is in place, and
    /// the files renamed before it are put back. Where a file system has
    /// no hard links, or a putting back fails, the error says which files
    /// are new.
    ///
    /// A set in one folder (a model's) also keeps a journal there
    /// (`SET_JOURNAL`) while it is put in place, locked for as long as
    /// the renames last: if a crash stops them, the next load or write of
    /// that folder finishes the set (`finish_interrupted_set`), every new
    /// file having been whole on disk before the first rename.
    pub fn write_atomic_set(files: &[(PathBuf, &[u8])]) -> Result<()> {
        let Some((first, _)) = files.first() else {
            return Ok(());
        };
        finish_interrupted_set(&folder_of(first))?;
        let set = prepare_set(files)?;
        put_set_in_place(&set)
    }

    /// The journal of a set of files being put in place, in their folder.
    pub const SET_JOURNAL: &str = ".nopescope-set-journal.json";

    /// The journal: names only, in the journal's own folder (a journal
    /// read from a folder can touch nothing outside it, and follows the
    /// folder when it is moved).
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct SetJournal {
        /// In the order they are renamed.
        pub(super) files: Vec<JournalEntry>,
        /// A rename was refused and the set is being put back: a crash
        /// meanwhile is finished backward (the old files restored), never
        /// forward over a half-restored set.
        #[serde(default)]
        pub(super) rolling_back: bool,
    }

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct JournalEntry {
        pub(super) file: String,
        pub(super) temp: String,
        /// The old file's second name, if there was one.
        pub(super) kept: Option<String>,
        /// What the temporary and the old file were (`file_id`): a folder
        /// written since by other means no longer matches, and its journal
        /// is dropped instead of applied over the new files.
        pub(super) temp_id: String,
        pub(super) kept_id: Option<String>,
        /// The old file was there but could not be kept: put back, its new
        /// one stays.
        #[serde(default)]
        pub(super) unkept: bool,
    }

    /// A set written to its temporaries, its old files kept, its journal
    /// (when it has one) on disk and locked: what is left is the renames.
    pub(super) struct PreparedSet {
        /// (temporary, file), in order.
        pub(super) renames: Vec<(PathBuf, PathBuf)>,
        pub(super) kept: Vec<Option<PathBuf>>,
        /// An old file that could not be kept, by place (for the error).
        unkept: Vec<bool>,
        /// The journal's path, its open, locked file (the lock goes with
        /// the file: when it is dropped, or when the process dies) and
        /// what it says.
        journal: Option<(PathBuf, std::fs::File, SetJournal)>,
    }

    /// The folder `path` is in: its parent, or "." for a bare file name.
    pub fn folder_of(path: &Path) -> PathBuf {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    }

    /// Whether the open `file` is still the one at `path` (Unix: the same
    /// device and inode; elsewhere taken as so).
    fn same_file(file: &std::fs::File, path: &Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            match (file.metadata(), std::fs::metadata(path)) {
                (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
                _ => false,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (file, path);
            true
        }
    }

    /// A file's identity for the journal: its inode (Unix), size and
    /// modification time. A hard link shares it with its file.
    fn file_id(path: &Path) -> Option<String> {
        let m = std::fs::symlink_metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0u64;
        let modified = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Some(format!("{inode}:{}:{modified}", m.len()))
    }

    /// Everything before the renames: the temporaries, the old files'
    /// second names and the journal. On failure nothing is left behind.
    pub(super) fn prepare_set(files: &[(PathBuf, &[u8])]) -> Result<PreparedSet> {
        let mut written: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
        let mut kept: Vec<Option<PathBuf>> = Vec::new();
        let mut unkept = Vec::new();
        let undo = |written: &[(PathBuf, &Path)], kept: &[Option<PathBuf>]| {
            for (tmp, _) in written {
                let _ = std::fs::remove_file(tmp);
            }
            for old in kept.iter().flatten() {
                let _ = std::fs::remove_file(old);
            }
        };
        for (path, bytes) in files {
            match write_temp(path, |f| f.write_all(bytes)) {
                Ok(tmp) => written.push((tmp, path)),
                Err(e) => {
                    undo(&written, &kept);
                    return Err(e);
                }
            }
        }
        for (_, path) in &written {
            let old = path.exists().then(|| {
                let old = temp_beside(path);
                std::fs::hard_link(path, &old).map(|()| old)
            });
            unkept.push(matches!(old, Some(Err(_))));
            kept.push(old.and_then(std::result::Result::ok));
        }
        let renames: Vec<(PathBuf, PathBuf)> = written.iter().map(|(t, p)| (t.clone(), p.to_path_buf())).collect();
        let journal = match journal_of(&renames, &kept, &unkept) {
            None => None,
            Some((path, journal)) => match write_locked_journal(&path, &journal) {
                Ok(file) => Some((path, file, journal)),
                Err(e) => {
                    undo(&written, &kept);
                    return Err(e);
                }
            },
        };
        Ok(PreparedSet {
            renames,
            kept,
            unkept,
            journal,
        })
    }

    /// The journal of a set, where it can have one: all its files in one
    /// folder, every name valid UTF-8. Elsewhere the set is put in place
    /// without (as before journals: a crash between renames can leave it
    /// mixed).
    fn journal_of(
        renames: &[(PathBuf, PathBuf)],
        kept: &[Option<PathBuf>],
        unkept: &[bool],
    ) -> Option<(PathBuf, SetJournal)> {
        let folder = folder_of(&renames.first()?.1);
        let name = |p: &Path| -> Option<String> {
            (folder_of(p) == folder).then_some(())?;
            p.file_name()?.to_str().map(str::to_string)
        };
        let mut files = Vec::new();
        for (((tmp, file), old), &unkept) in renames.iter().zip(kept).zip(unkept) {
            files.push(JournalEntry {
                file: name(file)?,
                temp: name(tmp)?,
                kept: match old {
                    Some(o) => Some(name(o)?),
                    None => None,
                },
                temp_id: file_id(tmp)?,
                kept_id: match old {
                    Some(o) => Some(file_id(o)?),
                    None => None,
                },
                unkept,
            });
        }
        Some((
            folder.join(SET_JOURNAL),
            SetJournal {
                files,
                rolling_back: false,
            },
        ))
    }

    /// Writes the journal whole, and locks it before it takes its name, so
    /// no reader ever finds it unlocked while the renames go on.
    fn write_locked_journal(path: &Path, journal: &SetJournal) -> Result<std::fs::File> {
        let bytes = serde_json::to_vec(journal).map_err(|e| Error::io(path, std::io::Error::other(e)))?;
        let tmp = write_temp(path, |f| f.write_all(&bytes))?;
        let locked = (|| {
            let file = std::fs::File::open(&tmp)?;
            file.lock()?;
            std::fs::rename(&tmp, path)?;
            Ok(file)
        })();
        locked.map_err(|e: std::io::Error| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e)
        })
    }

    /// The renames, then the old files' second names and the journal
    /// dropped. A rename refused halfway puts back the ones before it.
    fn put_set_in_place(set: &PreparedSet) -> Result<()> {
        let PreparedSet {
            renames,
            kept,
            unkept,
            journal,
        } = set;
        let drop_kept = |from: usize| {
            for old in kept[from..].iter().flatten() {
                let _ = std::fs::remove_file(old);
            }
        };
        let drop_journal = || {
            if let Some((path, _, _)) = journal {
                // Once the set is whole, or once it is put back: a journal
                // left by a failed removal finds every file renamed (or
                // put back) and only drops itself.
                let _ = std::fs::remove_file(path);
            }
        };
        for (i, (tmp, path)) in renames.iter().enumerate() {
            if let Err(e) = std::fs::rename(tmp, path) {
                // The journal says so before anything is put back, so a
                // crash meanwhile is finished backward by the next load;
                // where it cannot say so it goes first, never to be
                // finished forward over a half-restored set.
                let rollback_lock = begin_rollback(set);
                if rollback_lock.is_none() {
                    drop_journal();
                }
                for (tmp, _) in &renames[i..] {
                    let _ = std::fs::remove_file(tmp);
                }
                drop_kept(i);
                // Put back the ones renamed before this one.
                let mut new = Vec::new();
                for (((_, done), old), &unkept) in renames[..i].iter().zip(kept).zip(unkept) {
                    let back = match old {
                        Some(old) => std::fs::rename(old, done).is_ok(),
                        // The old file could not be kept: the new one stays.
                        None if unkept => false,
                        None => std::fs::remove_file(done).is_ok(),
                    };
                    if !back {
                        new.push(done.display().to_string());
                    }
                }
                let e = if new.is_empty() {
                    e
                } else {
                    std::io::Error::new(
                        e.kind(),
                        format!("{e}; the set is half written: new are {}, the rest old", new.join(", ")),
                    )
                };
                drop_journal();
                return Err(Error::io(path, e));
            }
        }
        drop_kept(0);
        drop_journal();
        Ok(())
    }

    /// Rewrites the set's journal as being put back (`rolling_back`),
    /// locked; its file, whose lock lasts until the set is put back, or
    /// `None` without a journal or where it could not be written.
    pub(super) fn begin_rollback(set: &PreparedSet) -> Option<std::fs::File> {
        let (path, _, journal) = set.journal.as_ref()?;
        let back = SetJournal {
            files: journal.files.clone(),
            rolling_back: true,
        };
        write_locked_journal(path, &back).ok()
    }

    /// A name a journal may hold: one plain file name, no folder, no "..".
    fn plain_name(name: &str) -> bool {
        let mut parts = Path::new(name).components();
        matches!(parts.next(), Some(std::path::Component::Normal(n)) if n == name) && parts.next().is_none()
    }

    /// Finishes a set of files whose writing a crash interrupted between
    /// its renames (`write_atomic_set`): its journal in `dir` says which
    /// temporaries are still to be put in place; they are, and the old
    /// files' second names and the journal go. Nothing to do without a
    /// journal.
    ///
    /// - A journal still locked belongs to a write going on now (a
    ///   training run saving its checkpoint): an error says to try again.
    /// - Names that are not plain file names of `dir`, or temporaries that
    ///   are not this program's, make the journal unreadable: an error
    ///   names it, and nothing is touched.
    /// - A folder whose files changed since (written again by other
    ///   means): the journal is dropped with its temporaries and kept
    ///   files, and the folder is left as it is now.
    pub fn finish_interrupted_set(dir: &Path) -> Result<()> {
        let path = dir.join(SET_JOURNAL);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let busy = || {
            Error::io(
                &path,
                std::io::Error::other(
                    "this folder's files are being written right now (a training run saving, another window); try again when that has finished",
                ),
            )
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(busy()),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // Locked, but maybe a journal another write has since replaced
        // (a rollback rewrites it): then that write is still going on.
        if !same_file(&file, &path) {
            return Err(busy());
        }
        let broken = |e: String| {
            Error::io(
                &path,
                std::io::Error::other(format!(
                    "a write of this folder's files was interrupted and its journal cannot be used ({e}); check the folder's files and remove the journal"
                )),
            )
        };
        // Through the locked handle (where locks are mandatory, another
        // handle could not read it).
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(|e| Error::io(&path, e))?;
        let journal: SetJournal = serde_json::from_slice(&bytes).map_err(|e| broken(e.to_string()))?;
        let ours = |n: &str| plain_name(n) && n.starts_with('.') && n.contains(".tmp-");
        for e in &journal.files {
            if !plain_name(&e.file) || !ours(&e.temp) || !e.kept.as_deref().is_none_or(ours) {
                return Err(broken(format!("it names {:?}, not a file of this folder", e.file)));
            }
        }
        if journal.rolling_back {
            return finish_rollback(dir, &path, &journal);
        }
        // Whether the folder is as the crash left it: each file either
        // renamed (it is its temporary) or still to go (its temporary is
        // there, the file is the old one or absent).
        let current = journal.files.iter().all(|e| {
            let (temp, file) = (dir.join(&e.temp), dir.join(&e.file));
            if temp.exists() {
                file_id(&temp).as_ref() == Some(&e.temp_id) && file_id(&file) == e.kept_id
            } else {
                file_id(&file).as_ref() == Some(&e.temp_id)
            }
        });
        for e in &journal.files {
            let temp = dir.join(&e.temp);
            if !temp.exists() {
                continue;
            }
            if current {
                journal_rename(&temp, &dir.join(&e.file), "finishing", &path)?;
            } else {
                let _ = std::fs::remove_file(&temp);
            }
        }
        for kept in journal.files.iter().filter_map(|e| e.kept.as_deref()) {
            let _ = std::fs::remove_file(dir.join(kept));
        }
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))
    }

    /// Finishes putting back a set a crash interrupted while a refused
    /// rename was being undone, file by file: an old file goes back under
    /// its name (from its second name) where that name holds the new file,
    /// the old one or nothing; a new file that had no old one is removed
    /// where it is still the new one; a file written since by other means
    /// stays (its old second name goes). Then the temporaries and the
    /// journal go. Run again after a crash in here, it finds what is left.
    fn finish_rollback(dir: &Path, path: &Path, journal: &SetJournal) -> Result<()> {
        for e in &journal.files {
            let _ = std::fs::remove_file(dir.join(&e.temp));
            let file = dir.join(&e.file);
            let now = file_id(&file);
            let ours = now.is_none() || now.as_ref() == Some(&e.temp_id) || now == e.kept_id;
            match e.kept.as_deref().map(|k| dir.join(k)) {
                Some(kept) if ours && kept.exists() && file_id(&kept) == e.kept_id => {
                    journal_rename(&kept, &file, "putting back", path)?;
                    // A second name of the file it already is stays after
                    // the rename (a file never renamed before the crash).
                    let _ = std::fs::remove_file(&kept);
                }
                Some(kept) => {
                    let _ = std::fs::remove_file(&kept);
                }
                None if !e.unkept && now.as_ref() == Some(&e.temp_id) => {
                    let _ = std::fs::remove_file(&file);
                }
                None => {}
            }
        }
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))
    }

    /// A rename a journal (at `journal`) asks for, its error naming what
    /// was being done (`doing`: finishing or putting back the write).
    fn journal_rename(from: &Path, to: &Path, doing: &str, journal: &Path) -> Result<()> {
        std::fs::rename(from, to).map_err(|err| {
            let why = format!(
                "{doing} an interrupted write of this folder ({}): {err}",
                journal.display()
            );
            Error::io(to, std::io::Error::new(err.kind(), why))
        })
    }

    fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::io(path, e))
    }

    /// The folder's config. A write of the folder's model that a crash
    /// interrupted is finished first (`finish_interrupted_set`), so what
    /// is read is one set.
    pub fn load_config(dir: &Path) -> Result<ModelConfig> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "is a file; a model is a folder holding {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_FILE}"
                    ),
                ),
            ));
        }
        finish_interrupted_set(dir)?;
        HfConfig::load(&dir.join(CONFIG_FILE))?.validate()
    }

    /// The bytes of `dir`'s weight files (one `model.safetensors`, or the
    /// index's shards), from their sizes, without reading them.
    pub fn weights_file_bytes(dir: &Path) -> Result<u64> {
        let single = dir.join(WEIGHTS_FILE);
        let index = dir.join(WEIGHTS_INDEX_FILE);
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(|e| Error::io(p, e));
        if single.exists() {
            return size(&single);
        }
        if !index.exists() {
            return Err(Error::Safetensors {
                path: dir.to_path_buf(),
                message: format!("no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in this folder"),
            });
        }
        let mut total = 0u64;
        for shard in shard_names(&read(&index)?, &index)? {
            total = total.saturating_add(size(&dir.join(shard))?);
        }
        Ok(total)
    }

    /// Loads the weights of `dir`: one `model.safetensors`, or the shards
    /// named by `model.safetensors.index.json`.
    pub fn load_params(dir: &Path, config: &ModelConfig) -> Result<Params<f32>> {
        let (layout, data) = load_params_as::<f32>(dir, config)?;
        Ok(Params { layout, data })
    }

    /// `load_params`, each weight stored as `T` as it is read (f16: no f32
    /// copy of the model is made on the way).
    pub fn load_params_as<T: Stored>(dir: &Path, config: &ModelConfig) -> Result<(ParamLayout, Vec<T>)> {
        let single = dir.join(WEIGHTS_FILE);
        let index = dir.join(WEIGHTS_INDEX_FILE);
        let layout = ParamLayout::new(config);
        // Allocated once the weights' size is known to fit the config.
        let zeros = |bytes: u64, path: &Path| -> Result<(Vec<T>, Vec<bool>)> {
            check_weights_size(config, &dir.join(CONFIG_FILE), bytes, path)?;
            Ok((vec![T::default(); layout.total], vec![false; layout.tensors.len()]))
        };
        let data = if single.exists() {
            let bytes = read(&single)?;
            let (mut data, mut seen) = zeros(bytes.len() as u64, &single)?;
            read_safetensors_as(&bytes, &single, config, &layout, &mut data, &mut seen)?;
            check_complete(&layout, &seen, &single)?;
            data
        } else if index.exists() {
            let shards = shard_names(&read(&index)?, &index)?;
            let (mut data, mut seen) = zeros(weights_file_bytes(dir)?, &index)?;
            for shard in shards {
                let p = dir.join(shard);
                read_safetensors_as(&read(&p)?, &p, config, &layout, &mut data, &mut seen)?;
            }
            check_complete(&layout, &seen, &index)?;
            data
        } else {
            return Err(Error::Safetensors {
                path: dir.to_path_buf(),
                message: format!("no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in this folder"),
            });
        };
        Ok((layout, data))
    }

    /// The files of a model folder as names and bytes, for
    /// [`model_from_files`]: config, tokenizer, and the weights (one file,
    /// or the index and every shard it names).
    pub fn read_model_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
        if !dir.is_dir() {
            return Err(Error::Input(format!("{} is not a folder", dir.display())));
        }
        let file = |name: &str| -> Result<(String, Vec<u8>)> { Ok((name.to_string(), read(&dir.join(name))?)) };
        let mut files = vec![file(CONFIG_FILE)?, file(TOKENIZER_FILE)?];
        if dir.join(WEIGHTS_FILE).exists() {
            files.push(file(WEIGHTS_FILE)?);
        } else {
            let index = file(WEIGHTS_INDEX_FILE)?;
            let shards = shard_names(&index.1, &dir.join(WEIGHTS_INDEX_FILE))?;
            files.push(index);
            for shard in shards {
                files.push(file(&shard)?);
            }
        }
        Ok(files)
    }

    /// Loads config, weights and (if present) tokenizer.
    pub fn load_model_dir(dir: &Path) -> Result<ModelDir> {
        let config = load_config(dir)?;
        let params = load_params(dir, &config)?;
        let tok_path = dir.join(TOKENIZER_FILE);
        let tokenizer = if tok_path.exists() {
            Some(Tokenizer::load(&tok_path)?)
        } else {
            None
        };
        if let Some(t) = &tokenizer {
            if t.vocab_size() > config.vocab_size {
                return Err(Error::Tokenizer {
                    path: tok_path,
                    message: format!(
                        "has {} entries, more than the model's vocab_size {}",
                        t.vocab_size(),
                        config.vocab_size
                    ),
                });
            }
        }
        Ok(ModelDir {
            dir: dir.to_path_buf(),
            config,
            params,
            tokenizer,
        })
    }

    /// Writes config.json and model.safetensors (f32) into `dir`, creating it.
    /// Writes a model of `config`'s shapes with random weights in the
    /// Hugging Face layout (config.json, model.safetensors in bf16, no
    /// tokenizer), tensor by tensor so that no f32 copy of the whole model
    /// is made: matrices ~ N(0, std^2), norm gains 1. For tests and
    /// benchmarks at the shapes of real checkpoints (the paper's 1.1B
    /// model). Returns the weight file's size in bytes.
    pub fn save_random_bf16(dir: &Path, config: &ModelConfig, std: f32, seed: u64) -> Result<u64> {
        let layout = ParamLayout::new(config);
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for t in &layout.tensors {
            let end = offset + 2 * t.len();
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": "BF16", "shape": t.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).expect("header serializes");
        // The data starts 8-byte aligned, as safetensors writers pad it.
        while !(8 + header.len()).is_multiple_of(8) {
            header.push(b' ');
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut rng = crate::model::rng::Rng::new(seed);
        write_atomic_with(&dir.join(WEIGHTS_FILE), |w| {
            w.write_all(&(header.len() as u64).to_le_bytes())?;
            w.write_all(&header)?;
            let mut buf = Vec::new();
            for t in &layout.tensors {
                let norm = t.shape.len() == 1;
                buf.clear();
                for _ in 0..t.len() {
                    let x = if norm { 1.0 } else { std * rng.normal() as f32 };
                    buf.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
                }
                w.write_all(&buf)?;
            }
            Ok(())
        })?;
        let json = serde_json::to_string_pretty(&config.to_hf()).expect("config serializes");
        write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())?;
        Ok((8 + header.len() + offset) as u64)
    }

    pub fn save_model(dir: &Path, config: &ModelConfig, params: &Params<f32>) -> Result<()> {
        save_model_with(dir, config, params, None)
    }

    /// `save_model`, with the tokenizer beside it when given: weights,
    /// config and tokenizer written as one set (`write_atomic_set`), so a
    /// failure while writing (a full disk) leaves the folder's model as it
    /// was, not half replaced.
    pub fn save_model_with(
        dir: &Path,
        config: &ModelConfig,
        params: &Params<f32>,
        tokenizer: Option<&crate::model::tokenizer::Tokenizer>,
    ) -> Result<()> {
        if params.layout != ParamLayout::new(config) {
            return Err(Error::Input("parameters do not match the config's layout".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let weights = params_to_safetensors(params)?;
        let json = serde_json::to_string_pretty(&config.to_hf()).expect("config serializes");
        let tok = tokenizer.map(|t| t.to_json()).transpose()?;
        let mut files: Vec<(PathBuf, &[u8])> = vec![
            (dir.join(WEIGHTS_FILE), weights.as_slice()),
            (dir.join(CONFIG_FILE), json.as_bytes()),
        ];
        if let Some(tok) = &tok {
            files.push((dir.join(TOKENIZER_FILE), tok.as_bytes()));
        }
        write_atomic_set(&files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-nope");

    /// Temporaries sit beside their file, hidden, keep its extension, and
    /// never repeat (two writers of one file do not share one).
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn temporaries_are_beside_hidden_and_unique() {
        let path = Path::new("out/figures/entropy.png");
        let (a, b) = (temp_beside(path), temp_beside(path));
        assert_ne!(a, b);
        for t in [&a, &b] {
            assert_eq!(t.parent(), path.parent());
            let name = t.file_name().unwrap().to_string_lossy();
            assert!(name.starts_with(".entropy.tmp-") && name.ends_with(".png"), "{name}");
        }
        assert_eq!(temp_beside(Path::new("config")).parent(), Some(Path::new(".")));
    }

    /// Only plain files are written over: a symbolic link, a folder or a
    /// device is refused by name, left as it was, and no temporary stays
    /// (the rename made a plain file of `/dev/full` and said it wrote it).
    #[cfg(unix)]
    #[test]
    fn only_plain_files_are_replaced() {
        let dir = std::env::temp_dir().join(format!("nopescope-plain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("folder")).unwrap();
        let (target, link) = (dir.join("target.json"), dir.join("link.json"));
        std::fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_atomic(&link, b"new").expect_err("a link");
        assert!(e.to_string().contains("link.json: is a symbolic link"), "{e}");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        let e = write_atomic_set(&[(target.clone(), &b"new"[..]), (dir.join("folder"), &b"new"[..])])
            .expect_err("a folder");
        assert!(e.to_string().contains("folder: is a folder"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(names(&dir), ["folder", "link.json", "target.json"]);
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "new");
        // Checked without writing: a failed check must not cost the machine its /dev/null.
        let e = check_replaceable(Path::new("/dev/null")).expect_err("a device");
        assert!(e.to_string().contains("not a plain file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The names in `dir`, sorted.
    #[cfg(not(target_arch = "wasm32"))]
    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        n.sort();
        n
    }

    /// A set of files is written whole or not at all: with the last one's
    /// folder missing, the first two keep their old contents and no
    /// temporary is left; with all folders there, all three are new.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn a_set_of_files_is_written_whole_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("nopescope-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.json"), dir.join("b.bin"));
        std::fs::write(&a, "old a").unwrap();
        std::fs::write(&b, "old b").unwrap();
        let c = dir.join("missing").join("c.txt");
        let set = |c: &Path| {
            vec![
                (a.clone(), &b"new a"[..]),
                (b.clone(), &b"new b"[..]),
                (c.to_path_buf(), &b"new c"[..]),
            ]
        };
        let e = write_atomic_set(&set(&c)).expect_err("the last folder is missing");
        assert!(e.to_string().contains("c.txt"), "{e}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "old b");
        let left = names(&dir);
        assert_eq!(left.len(), 2, "temporaries left: {left:?}");
        std::fs::create_dir_all(c.parent().unwrap()).unwrap();
        // The last one's rename refused (a folder where the file goes): the
        // two renamed before it are put back.
        std::fs::create_dir_all(c.join("in the way")).unwrap();
        let e = write_atomic_set(&set(&c)).expect_err("a folder in the way");
        assert!(
            e.to_string().contains("c.txt") && !e.to_string().contains("half"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "old b");
        assert_eq!(
            names(&dir),
            ["a.json", "b.bin", "missing"],
            "temporaries or kept files left"
        );
        assert_eq!(names(c.parent().unwrap()), ["c.txt"]);
        std::fs::remove_dir_all(&c).unwrap();
        write_atomic_set(&set(&c)).unwrap();
        for (p, want) in [(&a, "new a"), (&b, "new b"), (&c, "new c")] {
            assert_eq!(std::fs::read_to_string(p).unwrap(), want);
        }
        assert_eq!(names(&dir), ["a.json", "b.bin", "missing"], "kept files left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A crash between a set's renames (here: after the first of two)
    /// leaves its journal; the next load of the folder finishes the set,
    /// so it reads the new model whole, and nothing is left behind. While
    /// the renames go on a reader is told to wait; a journal naming files
    /// outside its folder is refused untouched; one whose folder was
    /// written again since is dropped, not applied.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn a_set_interrupted_between_renames_is_finished_by_the_next_load() {
        let dir = std::env::temp_dir().join(format!("nopescope-crash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The old model: the fixture's weights with a config of another
        // shape (a mixed set would not load).
        let config = fixture(CONFIG_FILE);
        let mut old: serde_json::Value = serde_json::from_slice(&config).unwrap();
        old["num_hidden_layers"] = serde_json::json!(old["num_hidden_layers"].as_u64().unwrap() + 1);
        std::fs::write(dir.join(CONFIG_FILE), old.to_string()).unwrap();
        std::fs::write(dir.join(WEIGHTS_FILE), b"old weights").unwrap();
        let weights = fixture(WEIGHTS_FILE);
        let files = vec![
            (dir.join(WEIGHTS_FILE), weights.as_slice()),
            (dir.join(CONFIG_FILE), config.as_slice()),
        ];
        let set = prepare_set(&files).unwrap();
        // While the set is being put in place, a reader is told to wait and
        // touches nothing (the journal is locked).
        let e = load_config(&dir).expect_err("a write going on");
        assert!(e.to_string().contains("being written right now"), "{e}");
        let (tmp, file) = &set.renames[0];
        std::fs::rename(tmp, file).unwrap();
        drop(set); // the crash: the config's rename never happens, the lock goes
        assert!(dir.join(SET_JOURNAL).exists());
        assert!(
            load_params(
                &dir,
                &HfConfig::load(&dir.join(CONFIG_FILE)).unwrap().validate().unwrap()
            )
            .is_err(),
            "before finishing, the folder holds a mixed set"
        );
        let m = load_model_dir(&dir).expect("the load finishes the set");
        assert_eq!(std::fs::read(dir.join(CONFIG_FILE)).unwrap(), config);
        assert_eq!(m.params.data.len(), ParamLayout::new(&m.config).total);
        assert_eq!(
            names(&dir),
            [CONFIG_FILE, WEIGHTS_FILE],
            "temporaries, kept files or journal left"
        );
        // A journal that cannot be read is an error that names it.
        std::fs::write(dir.join(SET_JOURNAL), b"{not json").unwrap();
        let e = load_config(&dir).expect_err("an unreadable journal");
        assert!(
            e.to_string().contains(SET_JOURNAL) && e.to_string().contains("interrupted"),
            "{e}"
        );
        // So is one that names anything but this folder's files: nothing
        // outside the folder is touched.
        let outside = std::env::temp_dir().join(format!("nopescope-outside-{}", std::process::id()));
        std::fs::write(&outside, b"keep me").unwrap();
        for (file, temp) in [
            (outside.to_str().unwrap(), ".config.tmp-1-1.json"),
            ("../config.json", ".config.tmp-1-1.json"),
            (CONFIG_FILE, "config.json"),
            (CONFIG_FILE, outside.to_str().unwrap()),
        ] {
            let journal = serde_json::json!({"files": [{"file": file, "temp": temp, "kept": null,
                "temp_id": "1:1:1", "kept_id": null}]});
            std::fs::write(dir.join(SET_JOURNAL), journal.to_string()).unwrap();
            let e = load_config(&dir).expect_err("a journal naming other files");
            assert!(
                e.to_string().contains("not a file of this folder"),
                "{file} {temp}: {e}"
            );
            assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
            assert_eq!(std::fs::read(dir.join(CONFIG_FILE)).unwrap(), config);
        }
        std::fs::remove_file(dir.join(SET_JOURNAL)).unwrap();
        let _ = std::fs::remove_file(&outside);

        // A folder written again by other means after the crash: its
        // journal is dropped, not applied over the new files.
        let files = vec![
            (dir.join(WEIGHTS_FILE), weights.as_slice()),
            (dir.join(CONFIG_FILE), b"{\"from\": \"the crashed write\"}".as_slice()),
        ];
        let set = prepare_set(&files).unwrap();
        let (tmp, file) = &set.renames[0];
        std::fs::rename(tmp, file).unwrap();
        drop(set);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.join(CONFIG_FILE), &config).unwrap(); // by hand, in place
        load_model_dir(&dir).expect("the folder as written by hand");
        assert_eq!(std::fs::read(dir.join(CONFIG_FILE)).unwrap(), config);
        assert_eq!(
            names(&dir),
            [CONFIG_FILE, WEIGHTS_FILE],
            "a stale journal or its files left"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A refused rename puts back the files renamed before it, and says
    /// so in the journal first: a crash while they are being put back is
    /// finished backward by the next load (every old file back, a new file
    /// that had no old one removed), whether it came before anything was
    /// put back or halfway; a file written by hand since stays. And the
    /// live path: a folder in the way of a set's last file.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn a_set_interrupted_while_being_put_back_is_put_back_by_the_next_load() {
        let dir = std::env::temp_dir().join(format!("nopescope-rollback-{}", std::process::id()));
        let old_config = b"{\"old\": true}".to_vec();
        let by_hand = b"{\"by\": \"hand\"}".to_vec();
        for case in ["at once", "halfway", "then written by hand"] {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(CONFIG_FILE), &old_config).unwrap();
            std::fs::write(dir.join(WEIGHTS_FILE), b"old weights").unwrap();
            let files = vec![
                (dir.join(WEIGHTS_FILE), b"new weights".as_slice()),
                (dir.join("extra.json"), b"new, no old one".as_slice()),
                (dir.join(CONFIG_FILE), b"{\"new\": true}".as_slice()),
            ];
            let set = prepare_set(&files).unwrap();
            // The first two renamed; the config's refused.
            for (tmp, file) in &set.renames[..2] {
                std::fs::rename(tmp, file).unwrap();
            }
            let lock = begin_rollback(&set).expect("the journal says it is put back");
            let e = load_config(&dir).expect_err("a reader waits meanwhile");
            assert!(e.to_string().contains("being written right now"), "{e}");
            if case == "halfway" {
                // As `put_set_in_place` goes: the refused one's temporary
                // and second name dropped, then the first put back.
                std::fs::remove_file(&set.renames[2].0).unwrap();
                std::fs::remove_file(set.kept[2].as_ref().unwrap()).unwrap();
                std::fs::rename(set.kept[0].as_ref().unwrap(), dir.join(WEIGHTS_FILE)).unwrap();
            }
            drop((set, lock)); // the crash
            if case == "then written by hand" {
                std::thread::sleep(std::time::Duration::from_millis(20));
                std::fs::write(dir.join(CONFIG_FILE), &by_hand).unwrap();
            }
            finish_interrupted_set(&dir).expect("finished backward");
            let config = if case == "then written by hand" {
                &by_hand
            } else {
                &old_config
            };
            assert_eq!(&std::fs::read(dir.join(CONFIG_FILE)).unwrap(), config, "{case}");
            assert_eq!(std::fs::read(dir.join(WEIGHTS_FILE)).unwrap(), b"old weights", "{case}");
            assert_eq!(
                names(&dir),
                [CONFIG_FILE, WEIGHTS_FILE],
                "{case}: a new file, temporary, kept file or journal left"
            );
        }
        // Live: the second rename refused (a folder where a file goes),
        // the first put back, the journal gone.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blocker")).unwrap();
        std::fs::write(dir.join("blocker").join("x"), b"in the way").unwrap();
        std::fs::write(dir.join(WEIGHTS_FILE), b"old weights").unwrap();
        let files = vec![
            (dir.join(WEIGHTS_FILE), b"new weights".as_slice()),
            (dir.join("blocker"), b"a file where a folder is".as_slice()),
        ];
        write_atomic_set(&files).expect_err("a folder in the way");
        assert_eq!(std::fs::read(dir.join(WEIGHTS_FILE)).unwrap(), b"old weights");
        assert_eq!(names(&dir), ["blocker", WEIGHTS_FILE]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn fixture(file: &str) -> Vec<u8> {
        std::fs::read(Path::new(FIXTURE).join(file)).unwrap()
    }

    /// The fixture's config with sizes far beyond what its weights hold.
    fn huge_config() -> Vec<u8> {
        let mut c: serde_json::Value = serde_json::from_slice(&fixture(CONFIG_FILE)).unwrap();
        c["hidden_size"] = (1usize << 24).into();
        c["vocab_size"] = (1usize << 24).into();
        c["num_attention_heads"] = 1.into();
        c["num_key_value_heads"] = 1.into();
        serde_json::to_vec(&c).unwrap()
    }

    /// The loader stores weights as f16 when asked, each the f32 load's
    /// value rounded to f16 (bf16 files here, written by
    /// `save_random_bf16`), and refuses a weight past f16's range by name.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn weights_load_as_f16_without_an_f32_copy() {
        let config = ModelConfig {
            hidden_size: 16,
            intermediate_size: 24,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 4,
            vocab_size: 37,
            ..ModelConfig::bench()
        };
        let dir = std::env::temp_dir().join(format!("nopescope-f16-load-{}", std::process::id()));
        save_random_bf16(&dir, &config, 0.5, 3).unwrap();
        let wide = load_params(&dir, &config).unwrap();
        let (layout, half) = load_params_as::<half::f16>(&dir, &config).unwrap();
        assert_eq!(layout, wide.layout);
        for (h, w) in half.iter().zip(&wide.data) {
            assert_eq!(h.to_bits(), half::f16::from_f32(*w).to_bits());
        }
        // A weight of 1e6 (f32 file): finite in f32, infinite in f16.
        let mut params = wide.clone();
        params.data[layout.tensors[3].offset + 2] = 1e6;
        save_model(&dir, &config, &params).unwrap();
        assert!(load_params(&dir, &config).is_ok());
        let e = load_params_as::<half::f16>(&dir, &config).unwrap_err().to_string();
        assert!(
            e.contains(&layout.tensors[3].name) && e.contains("element 2 is inf") && e.contains("65504"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn fixture_loads_from_bytes() {
        let (config, params) = model_from_bytes(&fixture(CONFIG_FILE), &fixture(WEIGHTS_FILE), Path::new("m")).unwrap();
        assert_eq!(params.data.len(), config.num_params().unwrap());
    }

    /// Reproduced by the model_from_bytes fuzz target (tests/fuzz, seed
    /// `huge-config`): a config of 2^48 parameters made Params::zeros ask for
    /// 2^50 bytes and abort the process.
    #[test]
    fn config_larger_than_weights_is_refused_before_allocating() {
        let err = model_from_bytes(&huge_config(), &fixture(WEIGHTS_FILE), Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(CONFIG_FILE) && err.contains(WEIGHTS_FILE), "{err}");
        assert!(err.contains("2814759514669056 parameters"), "{err}");
        // Empty weights: any config is too large for them.
        let err = model_from_bytes(&fixture(CONFIG_FILE), &[], Path::new("m")).unwrap_err();
        assert!(err.to_string().contains("0 bytes cannot hold"), "{err}");
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn load_model_dir_refuses_config_larger_than_weights() {
        let dir = std::env::temp_dir().join(format!("nopescope-huge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), huge_config()).unwrap();
        std::fs::write(dir.join(WEIGHTS_FILE), fixture(WEIGHTS_FILE)).unwrap();
        let err = load_model_dir(&dir).map(|_| ()).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("bytes cannot hold"), "{err}");
    }
}
