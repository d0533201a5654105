//! WGSL text and what every kernel module does with it: substitute the
//! `{{NAME}}` tokens from Rust constants (so a workgroup size is written
//! once, in Rust), validate with naga (in tests without a device, and before
//! every pipeline build so a failure carries naga's line and column), and
//! build explicit bind-group layouts and pipelines.
//!
//! Owns no kernel: each `src/gpu/<op>.rs` owns its `shaders/<op>*.wgsl`.

use super::context::GpuContext;
use super::error::{Error, Result};

/// One kernel's WGSL after substitution, with the bindings the Rust side
/// binds it with.
#[derive(Debug, Clone)]
pub struct ShaderSource {
    /// The file under `shaders/`, for messages.
    pub file: &'static str,
    pub text: String,
    /// Written once per kernel (`bind`): they make the bind-group layout
    /// (`build`) and are checked against the WGSL by naga (`validate`).
    pub bindings: Option<Bindings>,
}

/// A kernel's bindings as the Rust side uses them: the storage buffers
/// 0, 1, .. by name and access (outputs, then inputs; `GpuContext::bind`
/// takes the buffers in this order), then one uniform, the Rust struct
/// whose bytes fill it.
#[derive(Debug, Clone)]
pub struct Bindings {
    pub storage: &'static [(&'static str, Access)],
    pub uniform: UniformLayout,
}

/// A `#[repr(C)]` parameter struct's size and its fields' byte offsets,
/// in order (`uniform_layout!`), to check against the WGSL struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniformLayout {
    pub size: usize,
    pub fields: Vec<(&'static str, usize)>,
}

/// `UniformLayout` of a Rust struct: `uniform_layout!(MatmulParams: m, k, n)`.
/// A field name that the struct lacks does not compile; one left out or
/// out of order fails the naga check.
macro_rules! uniform_layout {
    ($t:ty: $($field:ident),+ $(,)?) => {
        $crate::gpu::shader::UniformLayout {
            size: ::std::mem::size_of::<$t>(),
            fields: vec![$((stringify!($field), ::std::mem::offset_of!($t, $field))),+],
        }
    };
}
pub(crate) use uniform_layout;

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
        ShaderSource {
            file,
            text,
            bindings: None,
        }
    }

    /// The variant of a kernel that reads its weights (the WGSL's `WT`
    /// elements) as f16, accumulating in f32: `enable f16;` and
    /// `alias WT = f16;`. Needs the device's `shader-f16`.
    pub fn with_f16_weights(&self, file: &'static str) -> Self {
        const F32: &str = "alias WT = f32;";
        debug_assert!(self.text.contains(F32), "{}: no `{F32}` to substitute", self.file);
        ShaderSource {
            file,
            text: format!("enable f16;\n{}", self.text.replace(F32, "alias WT = f16;")),
            bindings: self.bindings.clone(),
        }
    }

    /// Declares the bindings the kernel is built and bound with.
    pub(crate) fn bind(mut self, storage: &'static [(&'static str, Access)], uniform: UniformLayout) -> Self {
        self.bindings = Some(Bindings { storage, uniform });
        self
    }

    /// Parses and validates with naga; Err is naga's report with the file,
    /// line and column.
    pub fn validate(&self) -> Result<naga::Module, String> {
        let module =
            naga::front::wgsl::parse_str(&self.text).map_err(|e| e.emit_to_string_with_path(&self.text, self.file))?;
        let mut capabilities = naga::valid::Capabilities::default();
        if self.text.starts_with("enable f16;") {
            capabilities |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities)
            .validate(&module)
            .map_err(|e| e.emit_to_string_with_path(&self.text, self.file))?;
        if let Some(b) = &self.bindings {
            check_bindings(&module, b).map_err(|e| format!("{}: {e}", self.file))?;
        }
        Ok(module)
    }
}

/// The WGSL's global bindings against the Rust side's: group 0; storage
/// binding i named and accessed as `storage[i]` says (read: load only;
/// read-write: load and store); then the uniform, a struct of the Rust
/// struct's size whose members have its fields' names and offsets, in
/// order; nothing else bound.
pub fn check_bindings(module: &naga::Module, b: &Bindings) -> Result<(), String> {
    use naga::{AddressSpace, StorageAccess, TypeInner};
    let mut bound: Vec<(u32, &naga::GlobalVariable)> = Vec::new();
    for (_, var) in module.global_variables.iter() {
        if let Some(rb) = &var.binding {
            if rb.group != 0 {
                return Err(format!(
                    "{:?} is in group {}, the engine binds group 0",
                    var.name, rb.group
                ));
            }
            bound.push((rb.binding, var));
        }
    }
    bound.sort_by_key(|&(i, _)| i);
    let want = b.storage.len() + 1;
    let indices: Vec<u32> = bound.iter().map(|&(i, _)| i).collect();
    if indices != (0..want as u32).collect::<Vec<_>>() {
        return Err(format!(
            "bindings {indices:?}; the Rust side binds 0..{want} ({} storage buffers and the uniform)",
            b.storage.len()
        ));
    }
    for (&(i, var), &(name, access)) in bound.iter().zip(b.storage) {
        let var_name = var.name.as_deref().unwrap_or("?");
        if var_name != name {
            return Err(format!(
                "binding {i} is `{var_name}` in the WGSL, `{name}` on the Rust side"
            ));
        }
        let AddressSpace::Storage { access: got } = var.space else {
            return Err(format!(
                "binding {i} (`{name}`) is {:?}, not a storage buffer",
                var.space
            ));
        };
        let ok = match access {
            Access::Read => got == StorageAccess::LOAD,
            Access::ReadWrite => got.contains(StorageAccess::LOAD | StorageAccess::STORE),
        };
        if !ok {
            return Err(format!(
                "binding {i} (`{name}`) has access {got:?} in the WGSL, {access:?} on the Rust side"
            ));
        }
    }
    let (_, uniform) = bound[b.storage.len()];
    if uniform.space != AddressSpace::Uniform {
        return Err(format!("the last binding ({:?}) is not the uniform", uniform.name));
    }
    let TypeInner::Struct { members, span } = &module.types[uniform.ty].inner else {
        return Err("the uniform is not a struct".into());
    };
    let wgsl: Vec<(&str, usize)> = members
        .iter()
        .map(|m| (m.name.as_deref().unwrap_or("?"), m.offset as usize))
        .collect();
    if *span as usize != b.uniform.size || wgsl != b.uniform.fields {
        return Err(format!(
            "the uniform struct is {span} bytes with fields {wgsl:?} in the WGSL, {} bytes with {:?} on the Rust side",
            b.uniform.size, b.uniform.fields
        ));
    }
    Ok(())
}

/// The workgroup sum and max the row kernels share
/// (`shaders/workgroup_reduce.wgsl`), for [`include`].
pub(crate) const WORKGROUP_REDUCE: (&str, &str) =
    ("WORKGROUP_REDUCE", include_str!("../../shaders/workgroup_reduce.wgsl"));

/// `template` with each part's text where it names the part (`{{NAME}}`):
/// WGSL written once for several kernels. Values (`ShaderSource::new`)
/// are substituted after, so a part may use them.
pub(crate) fn include(template: &str, parts: &[(&str, &str)]) -> String {
    let mut text = template.to_string();
    for (name, part) in parts {
        let token = format!("{{{{{name}}}}}");
        debug_assert!(text.contains(&token), "no {token} to put the part in");
        text = text.replace(&token, part);
    }
    text
}

/// How a weight's values are held on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Elem {
    #[default]
    F32,
    /// Half precision (`shader-f16`), two values to a 4-byte word.
    F16,
}

impl Elem {
    /// 4-byte words holding `n` values (what a binding of them measures).
    pub fn words(self, n: usize) -> usize {
        match self {
            Elem::F32 => n,
            Elem::F16 => n.div_ceil(2),
        }
    }

    pub fn bytes(self, n: usize) -> u64 {
        match self {
            Elem::F32 => n as u64 * 4,
            Elem::F16 => n as u64 * 2,
        }
    }
}

/// A weight operand: its buffer and how its values are held.
#[derive(Debug, Clone, Copy)]
pub struct Weight<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub elem: Elem,
}

impl<'a> Weight<'a> {
    pub fn f32(buffer: &'a wgpu::Buffer) -> Self {
        Weight {
            buffer,
            elem: Elem::F32,
        }
    }
}

/// How a kernel uses one storage binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
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
    entry_points: &[&str],
) -> Result<(wgpu::BindGroupLayout, Vec<wgpu::ComputePipeline>)> {
    let shader_error = |message: String| Error::Shader {
        adapter: ctx.adapter(),
        file: shader.file,
        message,
    };
    shader.validate().map_err(shader_error)?;
    let Some(bindings) = &shader.bindings else {
        return Err(shader_error("no bindings declared on the Rust side".into()));
    };
    let storage: Vec<Access> = bindings.storage.iter().map(|&(_, a)| a).collect();
    let storage = storage.as_slice();
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
