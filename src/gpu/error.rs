//! The GPU layer's one error type. Every device-side message names the
//! adapter it came from, so a report from a user's machine says which GPU
//! (or which software rasterizer) failed; shader failures carry naga's
//! message with the line and column in the WGSL.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter at all (no Vulkan / Metal / DX12 / WebGPU on this machine).
    #[error("no GPU adapter: {message}")]
    NoAdapter { message: String },
    /// The adapter exists but cannot run compute shaders (WebGL2-class).
    #[error("{adapter}: the adapter has no compute shaders (a WebGL2-class device)")]
    NoComputeShaders { adapter: String },
    #[error("{adapter}: could not open a device: {message}")]
    RequestDevice { adapter: String, message: String },
    /// A WGSL file failed to parse or validate (naga's message), or the
    /// device refused to build its pipeline.
    #[error("{adapter}: shader {file} failed to build:\n{message}")]
    Shader {
        adapter: String,
        file: &'static str,
        message: String,
    },
    /// A wgpu validation error caught in an error scope (a bug in how a
    /// kernel was called that slipped past the shape checks).
    #[error("{adapter}: {what}: validation error: {message}")]
    Validation {
        adapter: String,
        what: String,
        message: String,
    },
    #[error("{adapter}: {what}: out of GPU memory: {message}")]
    OutOfMemory {
        adapter: String,
        what: String,
        message: String,
    },
    #[error("{adapter}: {what}: internal error: {message}")]
    Internal {
        adapter: String,
        what: String,
        message: String,
    },
    #[error("{adapter}: the device was lost ({reason})")]
    DeviceLost { adapter: String, reason: String },
    #[error("{adapter}: reading back {what}: {message}")]
    ReadBack {
        adapter: String,
        what: String,
        message: String,
    },
    /// Buffers too small for the sizes given, or sizes that do not fit u32.
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
    /// A dispatch or binding past a device limit (the caller must split it).
    #[error("{adapter}: {what} needs {needed}, past the device's {limit_name} of {limit}")]
    Limit {
        adapter: String,
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
    },
}
