//! The model layer's one error type. Every message names the file, tensor or
//! field at fault and, where shapes are involved, the shapes.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {}: {source}", path.display(), json_kind(source))]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },
    #[error("{}: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },
    #[error("tensor `{name}` in {}: expected shape {expected:?}, found {found:?}", path.display())]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` is missing from {}", path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("tensor `{name}` in {} is not part of this model (config: {layers} layers{tied})", path.display(), tied = if *tied { ", tied embeddings" } else { "" })]
    ExtraTensor {
        path: PathBuf,
        name: String,
        layers: usize,
        tied: bool,
    },
    #[error("tensor `{name}` in {}: {message}", path.display())]
    BadTensor {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error("head scales{}: {message}", source_name(path))]
    HeadScales { path: Option<PathBuf>, message: String },
    #[error("token id {id} at position {position} is outside the vocabulary (vocab_size {vocab_size})")]
    TokenOutOfRange {
        id: u32,
        position: usize,
        vocab_size: usize,
    },
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Engine(String),
    /// Work past what the device can hold (a binding, a buffer, a
    /// dispatch): the same work may run on another engine.
    #[error("{0}")]
    DeviceLimit(String),
    /// The GPU device was lost (driver reset, tab in the background too
    /// long): the engine must be made again.
    #[error("{0}")]
    DeviceLost(String),
    /// A model that needs more memory than the machine (or device) has,
    /// found before loading it: the message gives both.
    #[error("{0}")]
    Memory(String),
    /// The device's memory filled up while running: the same work may fit
    /// with fewer tokens, smaller weights or another engine.
    #[error("{0}")]
    DeviceMemory(String),
    #[error("cancelled")]
    Cancelled,
}

/// What kind of failure an [`Error`] is, for callers that react to it (the
/// CLI's advice, the app's fallback to the CPU engine) rather than print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file: missing, unreadable, not what it claims to be.
    File,
    /// Bad input from the caller: shapes, tokens, settings.
    BadInput,
    DeviceLimit,
    DeviceLost,
    /// Not enough memory for the model on the chosen engine.
    Memory,
    /// The device ran out of memory during the work.
    DeviceMemory,
    /// The engine failed otherwise (a diverging update, an internal error).
    Engine,
    Cancelled,
}

fn source_name(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" ({})", p.display()),
        None => String::new(),
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. }
            | Error::Json { .. }
            | Error::Safetensors { .. }
            | Error::Shape { .. }
            | Error::MissingTensor { .. }
            | Error::ExtraTensor { .. }
            | Error::BadTensor { .. }
            | Error::Tokenizer { .. }
            | Error::HeadScales { .. } => ErrorKind::File,
            Error::Config { .. } | Error::TokenOutOfRange { .. } | Error::Input(_) => ErrorKind::BadInput,
            Error::Engine(_) => ErrorKind::Engine,
            Error::DeviceLimit(_) => ErrorKind::DeviceLimit,
            Error::DeviceLost(_) => ErrorKind::DeviceLost,
            Error::Memory(_) => ErrorKind::Memory,
            Error::DeviceMemory(_) => ErrorKind::DeviceMemory,
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn config(field: &str, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// What was wrong with a JSON file: its syntax, or (valid JSON) its form,
/// such as a training recipe given where a model's config goes.
fn json_kind(e: &serde_json::Error) -> &'static str {
    if e.is_data() {
        "valid JSON, but not of the form expected here"
    } else {
        "not valid JSON"
    }
}
