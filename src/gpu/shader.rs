//! WGSL text and what every kernel module does with it: substitute the
//! `{{NAME}}` tokens from Rust constants (so a workgroup size is written
//! once, in Rust), validate with naga (in tests without a device, and before
//! every pipeline build so a failure carries naga's line and column), and
//! build explicit bind-group layouts and pipelines.
//!
//! Owns no kernel: each `src/gpu/<op>.rs` owns its `shaders/<op>*.wgsl`.

use super::context::GpuContext;
use super::error::{Error, Result};

/// One kernel's WGSL after substitution.
#[derive(Debug, Clone)]
pub struct ShaderSource {
    /// The file under `shaders/`, for messages.
    pub file: &'static str,
    pub text: String,
}

impl ShaderSource {
    /// Replaces every `{{NAME}}` of `template` with its value. A token left
    /// over (a name missing from `values`) makes naga's parse fail at it.
    pub fn new(file: &'static str, template: &str, values: &[(&str, u32)]) -> Self {
        let mut text = template.to_string();
        for (name, value) in values {
            let token = format!("{{{{{name}}}}}");
            debug_assert!(text.contains(&token), "{file}: no {token} to substitute");
            text = text.replace(&token, &value.to_string());
        }
        ShaderSource { file, text }
    }

    /// Parses and validates with naga; Err is naga's report with the file,
    /// line and column.
    pub fn validate(&self) -> Result<naga::Module, String> {
        let module =
            naga::front::wgsl::parse_str(&self.text).map_err(|e| e.emit_to_string_with_path(&self.text, self.file))?;
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .map_err(|e| e.emit_to_string_with_path(&self.text, self.file))?;
        Ok(module)
    }
}

/// How a kernel uses one storage binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    Read,
}

/// An explicit bind-group layout: the storage bindings 0, 1, .. in the
/// kernel's signature order (outputs, then inputs), then one uniform for the
/// parameters. `GpuContext::bind` fills it in the same order.
pub(crate) fn layout(ctx: &GpuContext, label: &str, storage: &[Access]) -> wgpu::BindGroupLayout {
    let stage = wgpu::ShaderStages::COMPUTE;
    let mut entries: Vec<wgpu::BindGroupLayoutEntry> = storage
        .iter()
        .enumerate()
        .map(|(i, access)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: stage,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: *access == Access::Read,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    entries.push(wgpu::BindGroupLayoutEntry {
        binding: storage.len() as u32,
        visibility: stage,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    });
    ctx.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

/// A kernel's bind-group layout and one pipeline per entry point, built
/// once. naga validates the source first; a device-side failure is returned
/// as `Error::Shader` with wgpu's message (which carries naga's for
/// back-end translation failures).
pub(crate) async fn build(
    ctx: &GpuContext,
    shader: &ShaderSource,
    storage: &[Access],
    entry_points: &[&str],
) -> Result<(wgpu::BindGroupLayout, Vec<wgpu::ComputePipeline>)> {
    let shader_error = |message: String| Error::Shader {
        adapter: ctx.adapter(),
        file: shader.file,
        message,
    };
    shader.validate().map_err(shader_error)?;
    let built = ctx
        .scoped(shader.file, || {
            let layout = layout(ctx, &format!("{} bind group layout", shader.file), storage);
            let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.file),
                source: wgpu::ShaderSource::Wgsl(shader.text.as_str().into()),
            });
            let pipeline_layout = ctx.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&format!("{} pipeline layout", shader.file)),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipelines = entry_points
                .iter()
                .map(|entry| {
                    ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry),
                        layout: Some(&pipeline_layout),
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: Default::default(),
                        cache: None,
                    })
                })
                .collect();
            (layout, pipelines)
        })
        .await;
    built.map_err(|e| match e {
        Error::Validation { message, .. } | Error::Internal { message, .. } => shader_error(message),
        other => other,
    })
}

/// Converts a size (or a product of sizes, formed in u64) to the u32 the
/// shaders index with.
pub(crate) fn to_u32<V: TryInto<u32> + std::fmt::Display + Copy>(
    op: &'static str,
    name: &str,
    value: V,
) -> Result<u32> {
    value.try_into().map_err(|_| Error::Shape {
        op,
        message: format!("{name} = {value} does not fit the shader's u32 indices"),
    })
}
