//! The WGSL engine's foundation: the device (`context`), WGSL handling
//! (`shader`), and one module per kernel, each owning its
//! `shaders/<op>*.wgsl`, its explicit bind-group layout, its pipelines
//! (built once) and its dispatch maths. Every kernel has a CPU twin in
//! `model/` and is tested against it (`tests/gpu_kernels.rs`).
//!
//! Depends on `model/` (the twins, later the config and weights) and never
//! on egui; nothing in `model/` depends on this module.

pub mod attention;
pub mod context;
pub mod cross_entropy;
pub mod embedding;
pub mod engine;
pub mod error;
pub mod matmul;
pub mod optim;
pub mod profile;
pub mod rmsnorm;
pub mod rope;
pub mod scale_rows;
pub mod shader;
pub mod swiglu;

pub use context::{AdapterReport, GpuContext, LimitsReport};
pub use engine::GpuEngine;
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
    all.extend(matmul::f16_shaders());
    all.extend(embedding::f16_shaders());
    all.extend(rmsnorm::shaders());
    all.extend(embedding::shaders());
    all.extend(swiglu::shaders());
    all.extend(rope::shaders());
    all.extend(scale_rows::shaders());
    all.extend(cross_entropy::shaders());
    all.extend(optim::shaders());
    all.extend(attention::shaders());
    all.extend(attention::flash_shaders(
        32,
        attention::FLASH_WG,
        attention::FLASH_KEY_BLOCK,
        attention::FLASH_KEY_BLOCK,
    ));
    all
}

/// Every kernel's pipelines, built once per device.
#[derive(Debug)]
pub struct Kernels {
    pub matmul: matmul::Matmul,
    pub rmsnorm: rmsnorm::RmsNorm,
    pub embedding: embedding::Embedding,
    pub swiglu: swiglu::Swiglu,
    pub rope: rope::Rope,
    pub scale_rows: scale_rows::ScaleRows,
    pub cross_entropy: cross_entropy::CrossEntropy,
    pub optim: optim::Optim,
    pub attention: attention::Attention,
}

impl Kernels {
    pub async fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Kernels {
            matmul: matmul::Matmul::new(ctx).await?,
            rmsnorm: rmsnorm::RmsNorm::new(ctx).await?,
            embedding: embedding::Embedding::new(ctx).await?,
            swiglu: swiglu::Swiglu::new(ctx).await?,
            rope: rope::Rope::new(ctx).await?,
            scale_rows: scale_rows::ScaleRows::new(ctx).await?,
            cross_entropy: cross_entropy::CrossEntropy::new(ctx).await?,
            optim: optim::Optim::new(ctx).await?,
            attention: attention::Attention::new(ctx).await?,
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
        assert!(all.len() >= 19);
        for s in &all {
            assert!(!s.text.contains("{{"), "{}: a token was left unsubstituted", s.file);
            assert!(
                s.bindings.is_some(),
                "{}: no bindings declared on the Rust side",
                s.file
            );
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
        // Row kernels (a workgroup per row, reduced in workgroup memory),
        // per-(row, head) attention kernels, and elementwise kernels.
        let row = [
            "rmsnorm_forward",
            "rmsnorm_backward",
            "cross_entropy",
            "grad_norm_partial",
            "grad_norm_final",
            "attention_backward_dscale",
        ];
        let query = [
            "attention_forward",
            "attention_forward_tiled",
            "attention_forward_combine",
            "attention_backward_delta",
            "attention_backward_dq",
            "attention_backward_dkdv",
        ];
        let rest = rmsnorm::shaders()
            .into_iter()
            .chain(embedding::shaders())
            .chain(swiglu::shaders())
            .chain(rope::shaders())
            .chain(cross_entropy::shaders())
            .chain(optim::shaders())
            .chain(attention::shaders());
        let mut entry_points = 0;
        for s in rest {
            let module = s.validate().unwrap();
            for ep in &module.entry_points {
                let want = if row.contains(&ep.name.as_str()) {
                    ROW_WG
                } else if query.contains(&ep.name.as_str()) {
                    attention::QUERY_WG
                } else {
                    ELEMENT_WG
                };
                assert_eq!(ep.workgroup_size, [want, 1, 1], "{}: {}", s.file, ep.name);
                entry_points += 1;
            }
        }
        assert_eq!(
            entry_points,
            4 + 2 + 2 + 1 + 1 + 4 + 7,
            "an entry point is missing from this test"
        );
    }

    /// The naga check of a kernel's bindings against the Rust side fails
    /// on each kind of mismatch, naming it: access, name, binding count,
    /// a uniform field missing, out of order, or of another size.
    #[test]
    fn bindings_that_disagree_with_the_wgsl_are_refused() {
        use shader::{uniform_layout, Access::*, UniformLayout};
        let [src, _] = matmul::shaders();
        assert!(src.validate().is_ok());
        let with = |storage: &'static [(&'static str, shader::Access)], uniform: UniformLayout| {
            let mut s = src.clone();
            s.bindings = None;
            s.bind(storage, uniform).validate().unwrap_err()
        };
        let full = || uniform_layout!(matmul::MatmulParams: m, k, n, alpha, beta, lda, a_off, ldc, c_off);
        let e = with(&[("c", ReadWrite), ("a", ReadWrite), ("b", Read)], full());
        assert!(e.contains("binding 1 (`a`) has access"), "{e}");
        let e = with(&[("c", ReadWrite), ("b", Read), ("a", Read)], full());
        assert!(e.contains("binding 1 is `a` in the WGSL, `b` on the Rust side"), "{e}");
        let e = with(&[("c", ReadWrite), ("a", Read)], full());
        assert!(e.contains("bindings [0, 1, 2, 3]; the Rust side binds 0..3"), "{e}");
        let storage = &[("c", ReadWrite), ("a", Read), ("b", Read)];
        let e = with(
            storage,
            uniform_layout!(matmul::MatmulParams: m, k, n, alpha, beta, lda, a_off, ldc),
        );
        assert!(e.contains("the uniform struct is 36 bytes"), "{e}");
        let e = with(
            storage,
            uniform_layout!(matmul::MatmulParams: k, m, n, alpha, beta, lda, a_off, ldc, c_off),
        );
        assert!(e.contains("on the Rust side"), "{e}");
        let mut small = full();
        small.size = 32;
        let e = with(storage, small);
        assert!(e.contains("32 bytes with"), "{e}");
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
