//! The WGSL engine's foundation: the device (`context`), WGSL handling
//! (`shader`), and one module per kernel, each owning its
//! `shaders/<op>*.wgsl`, its explicit bind-group layout, its pipelines
//! (built once) and its dispatch maths. Every kernel has a CPU twin in
//! `model/` and is tested against it (`tests/gpu_kernels.rs`).
//!
//! Depends on `model/` (the twins, later the config and weights) and never
//! on egui; nothing in `model/` depends on this module.

pub mod context;
pub mod embedding;
pub mod error;
pub mod matmul;
pub mod rmsnorm;
pub mod shader;

pub use context::{AdapterReport, GpuContext, LimitsReport};
pub use error::{Error, Result};
pub use shader::ShaderSource;

/// Invocations per workgroup of the elementwise kernels (one invocation
/// per output element).
pub const ELEMENT_WG: u32 = 64;

/// Invocations per workgroup of the row kernels (one workgroup per row,
/// reduced in workgroup memory): a power of two for the tree reduction.
pub const ROW_WG: u32 = 64;
const _: () = assert!(ROW_WG.is_power_of_two());

/// Every kernel's WGSL after substitution: what the naga test walks.
pub fn all_shaders() -> Vec<ShaderSource> {
    let mut all = Vec::new();
    all.extend(matmul::shaders());
    all.extend(rmsnorm::shaders());
    all.extend(embedding::shaders());
    all
}

/// Every kernel's pipelines, built once per device.
#[derive(Debug)]
pub struct Kernels {
    pub matmul: matmul::Matmul,
    pub rmsnorm: rmsnorm::RmsNorm,
    pub embedding: embedding::Embedding,
}

impl Kernels {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Kernels {
            matmul: matmul::Matmul::new(ctx).await?,
            rmsnorm: rmsnorm::RmsNorm::new(ctx).await?,
            embedding: embedding::Embedding::new(ctx).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shader parses and validates with naga, after substitution,
    /// with no device.
    #[test]
    fn every_shader_validates_with_naga() {
        let all = all_shaders();
        assert!(all.len() >= 7);
        for s in &all {
            assert!(!s.text.contains("{{"), "{}: a token was left unsubstituted", s.file);
            if let Err(e) = s.validate() {
                panic!("{}:\n{e}", s.file);
            }
        }
        let mut files: Vec<_> = all.iter().map(|s| s.file).collect();
        files.sort_unstable();
        files.dedup();
        assert_eq!(files.len(), all.len(), "two kernels share a file name");
    }

    /// Each workgroup size in the shader is the Rust constant.
    #[test]
    fn workgroup_sizes_come_from_rust() {
        for s in matmul::shaders() {
            let module = s.validate().unwrap();
            assert_eq!(module.entry_points.len(), 3, "{}", s.file);
            for ep in &module.entry_points {
                assert_eq!(ep.workgroup_size, [matmul::WG_SIDE, matmul::WG_SIDE, 1], "{}", ep.name);
            }
        }
        for s in rmsnorm::shaders().iter().chain(embedding::shaders().iter()) {
            let module = s.validate().unwrap();
            for ep in &module.entry_points {
                let want = if ep.name.starts_with("rmsnorm_dw") || ep.name.starts_with("embedding") {
                    ELEMENT_WG
                } else {
                    ROW_WG
                };
                assert_eq!(ep.workgroup_size, [want, 1, 1], "{}: {}", s.file, ep.name);
            }
        }
    }

    /// A broken shader's error is naga's, naming the file and line.
    #[test]
    fn a_broken_shader_reports_naga_message_with_its_line() {
        let broken = ShaderSource::new(
            "broken.wgsl",
            "@compute @workgroup_size({{WG}})\nfn main() {\n  let x: f32 = 1u;\n}\n",
            &[("WG", 64)],
        );
        let e = broken.validate().unwrap_err();
        assert!(e.contains("broken.wgsl:3"), "{e}");
        let unparsable = ShaderSource::new("unparsable.wgsl", "fn main( {", &[]);
        let e = unparsable.validate().unwrap_err();
        assert!(e.contains("unparsable.wgsl:1"), "{e}");
    }
}
