//! The device the kernels run on, taken from outside so the CLI, the tests
//! and eframe's own wgpu device can share one; what the adapter is and the
//! limits that decide how work is split; and the three ways work reaches the
//! device (create, submit, read back), each inside error scopes so a
//! validation error, an out-of-memory or a lost device comes back as an
//! `Error` naming the adapter, never as wgpu's default panic.
//!
//! Owns no kernels (those live in their own modules) and never blocks on the
//! web: read-back awaits `map_async` through a channel; natively it polls
//! the device until the copy is done.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::error::{Error, Result};

/// The limits that decide how the engine splits its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsReport {
    /// Largest buffer range one binding may cover (128 MiB on lavapipe and
    /// in many browsers): longer sequences must be split.
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_shader_stage: u32,
}

impl LimitsReport {
    pub fn from_limits(l: &wgpu::Limits) -> Self {
        LimitsReport {
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
        }
    }
}

impl fmt::Display for LimitsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "max storage binding {:.0} MiB, max buffer {:.0} MiB, {} invocations and {} KiB per workgroup, {} workgroups per dimension, {} storage buffers per stage",
            mib(self.max_storage_buffer_binding_size),
            mib(self.max_buffer_size),
            self.max_compute_invocations_per_workgroup,
            self.max_compute_workgroup_storage_size / 1024,
            self.max_compute_workgroups_per_dimension,
            self.max_storage_buffers_per_shader_stage,
        )
    }
}

/// What the adapter is, for messages, `info --devices` and the choice
/// between engines (`is_cpu`: a software rasterizer is slower than the CPU
/// engine, so `auto` must not pick it).
#[derive(Debug, Clone)]
pub struct AdapterReport {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    /// A CPU or fallback adapter: lavapipe / llvmpipe, SwiftShader (the web
    /// backend reports a fallback adapter as `DeviceType::Cpu`), WARP.
    pub is_cpu: bool,
    pub limits: LimitsReport,
}

/// Microsoft's WARP rasterizer reports itself as an integrated GPU.
const WARP_VENDOR_DEVICE: (u32, u32) = (0x1414, 0x8c);

impl AdapterReport {
    pub fn new(info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> Self {
        let is_cpu = info.device_type == wgpu::DeviceType::Cpu || (info.vendor, info.device) == WARP_VENDOR_DEVICE;
        AdapterReport {
            name: info.name.clone(),
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            is_cpu,
            limits: LimitsReport::from_limits(limits),
        }
    }

    /// One line naming the adapter, as every error message starts (a
    /// browser's WebGPU gives wgpu no name: "unnamed adapter").
    pub fn label(&self) -> String {
        self.label_or("unnamed adapter")
    }

    /// `label`, with `unnamed` where the adapter has no name.
    pub fn label_or(&self, unnamed: &str) -> String {
        let name = if self.name.is_empty() { unnamed } else { &self.name };
        format!("{name} ({}, {:?})", self.backend, self.device_type)
    }
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.label())?;
        if !self.driver.is_empty() {
            write!(f, ", driver {} {}", self.driver, self.driver_info)?;
        }
        if self.is_cpu {
            write!(f, ", a CPU / fallback adapter")?;
        }
        write!(f, "; {}", self.limits)
    }
}

/// Commands being recorded for one submission: the encoder, and the
/// compute pass that consecutive dispatches share (`GpuContext::dispatch`).
/// Anything else recorded through the encoder (a copy, a clear, a
/// read-back) goes through `DerefMut`, which ends the open pass first, so
/// the commands keep the order they were recorded in; within a pass wgpu
/// orders each dispatch after the writes of the ones before.
pub struct Recorder {
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
}

impl Recorder {
    pub fn new(encoder: wgpu::CommandEncoder) -> Self {
        Recorder { encoder, pass: None }
    }

    /// The open compute pass, begun if none is.
    fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        let encoder = &mut self.encoder;
        self.pass.get_or_insert_with(|| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("nopescope dispatches"),
                    timestamp_writes: None,
                })
                .forget_lifetime()
        })
    }

    /// Ends the open pass and the recording.
    pub fn finish(mut self) -> wgpu::CommandBuffer {
        self.pass = None;
        self.encoder.finish()
    }
}

impl std::ops::Deref for Recorder {
    type Target = wgpu::CommandEncoder;
    fn deref(&self) -> &wgpu::CommandEncoder {
        &self.encoder
    }
}

impl std::ops::DerefMut for Recorder {
    fn deref_mut(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        &mut self.encoder
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("pass_open", &self.pass.is_some())
            .finish()
    }
}

/// What the device callbacks saw: a loss, or an error no scope caught.
#[derive(Debug, Default)]
struct Health {
    lost: Option<String>,
    uncaptured: Option<String>,
}

/// A device and queue the kernels run on, with what the adapter is.
#[derive(Debug, Clone)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    report: AdapterReport,
    health: Arc<Mutex<Health>>,
    work: Arc<WorkCounters>,
    caches: Arc<Mutex<Caches>>,
    profile: Arc<Mutex<Option<super::profile::Profile>>>,
}

/// What a call made that the next call can use again: a uniform buffer per
/// distinct parameter bytes, a bind group per distinct (layout, bound
/// buffers and sizes, uniform). A forward at a length the engine has seen
/// records the same dispatches over the same buffers, so it makes none of
/// these again. Entries keep their buffers alive: both maps are emptied
/// when they pass `CACHE_ENTRIES`, and by `GpuContext::clear_caches`
/// (the engine calls it when it drops its buffers for another length).
#[derive(Default, Debug)]
struct Caches {
    uniforms: std::collections::HashMap<Vec<u8>, wgpu::Buffer>,
    bind_groups: std::collections::HashMap<BindKey, wgpu::BindGroup>,
}

#[derive(PartialEq, Eq, Hash, Debug)]
struct BindKey {
    layout: wgpu::BindGroupLayout,
    storage: Vec<(wgpu::Buffer, usize)>,
    params: wgpu::Buffer,
}

const CACHE_ENTRIES: usize = 4096;

/// A copy recorded for reading back (`GpuContext::stage`).
#[derive(Debug)]
pub struct Staged {
    what: String,
    buffer: Option<wgpu::Buffer>,
}

/// Counts of what the context asked of the device (`DeviceWork`).
#[derive(Debug, Default)]
struct WorkCounters {
    submits: AtomicU64,
    dispatches: AtomicU64,
    buffers: AtomicU64,
    bind_groups: AtomicU64,
    read_backs: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl GpuContext {
    /// Wraps a device this program opened (the CLI, a test): checks that
    /// the adapter runs compute shaders, and installs a device-lost
    /// callback and an uncaptured-error handler (replacing any set before),
    /// so errors that escape the scopes are recorded and returned by the
    /// next call instead of panicking.
    pub fn new(adapter: &wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let ctx = Self::borrowed(adapter, device, queue)?;
        let lost = Arc::clone(&ctx.health);
        ctx.device.set_device_lost_callback(move |reason, message| {
            let mut h = lost.lock().unwrap_or_else(|e| e.into_inner());
            h.lost.get_or_insert_with(|| format!("{reason:?}: {message}"));
        });
        let uncaptured = Arc::clone(&ctx.health);
        ctx.device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut h = uncaptured.lock().unwrap_or_else(|e| e.into_inner());
            h.uncaptured.get_or_insert_with(|| e.to_string());
        }));
        Ok(ctx)
    }

    /// Wraps a device someone else owns (eframe's, which draws the window)
    /// without touching its handlers: the owner keeps its own error
    /// handling and device-lost callback. Every engine call already runs
    /// inside error scopes, so the engine's errors still come back as Err;
    /// a lost device shows as the error of the call that met it.
    pub fn borrowed(adapter: &wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let report = AdapterReport::new(&adapter.get_info(), &device.limits());
        let downlevel = adapter.get_downlevel_capabilities();
        if !downlevel.flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS) {
            return Err(Error::NoComputeShaders {
                adapter: report.label(),
            });
        }
        Ok(GpuContext {
            device,
            queue,
            report,
            health: Arc::new(Mutex::new(Health::default())),
            work: Arc::default(),
            caches: Arc::default(),
            profile: Arc::default(),
        })
    }

    /// Opens the default adapter (a discrete GPU where there is one) with
    /// every limit it offers. Works on every target; on the web, await it.
    pub async fn request_default() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter { message: e.to_string() })?;
        Self::open(&adapter).await
    }

    /// Opens a device on `adapter` with every limit it offers.
    pub async fn open(adapter: &wgpu::Adapter) -> Result<Self> {
        let label = AdapterReport::new(&adapter.get_info(), &adapter.limits()).label();
        let downlevel = adapter.get_downlevel_capabilities();
        if !downlevel.flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS) {
            return Err(Error::NoComputeShaders { adapter: label });
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("nopescope device"),
                required_limits: adapter.limits(),
                // Weights may be held in f16 where the adapter can; kernels
                // can be timed where it has timestamp queries.
                required_features: adapter.features() & (wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: label,
                message: e.to_string(),
            })?;
        Self::new(adapter, device, queue)
    }

    /// `request_default`, waited for (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_default() -> Result<Self> {
        pollster::block_on(Self::request_default())
    }

    /// Every adapter this machine offers, for `info --devices` (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn list_adapters() -> Vec<AdapterReport> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(|a| AdapterReport::new(&a.get_info(), &a.limits()))
            .collect()
    }

    pub fn report(&self) -> &AdapterReport {
        &self.report
    }

    /// The adapter's one-line name, as error messages start.
    pub fn adapter(&self) -> String {
        self.report.label()
    }

    /// The limits of the device itself (what was requested of the adapter).
    pub fn limits(&self) -> &LimitsReport {
        &self.report.limits
    }

    /// Lowers (never raises) the max storage binding and max buffer size
    /// this context checks bindings and buffers against, so tests reach
    /// the engine's paging of long sequences at small sizes and every
    /// binding is checked against the lower limit. The device's own limits
    /// stay; only this copy of the context is affected.
    /// This context with its max storage binding lowered to `bytes` (never
    /// raised): what an engine made on it splits its weights and pages its
    /// sequences by, as on a device that allows only that (many browsers
    /// allow 128 MiB). For tests and `nopescope bench --binding-limit`.
    pub fn with_binding_limit(mut self, bytes: u64) -> Self {
        self.lower_limits(bytes, u64::MAX);
        self
    }

    pub(crate) fn lower_limits(&mut self, max_storage_buffer_binding_size: u64, max_buffer_size: u64) {
        let l = &mut self.report.limits;
        l.max_storage_buffer_binding_size = l.max_storage_buffer_binding_size.min(max_storage_buffer_binding_size);
        l.max_buffer_size = l.max_buffer_size.min(max_buffer_size);
        // As in WebGPU, no binding is larger than a buffer may be.
        l.max_storage_buffer_binding_size = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
    }

    /// Lowers (never raises) the workgroups a dispatch may have along one
    /// dimension, as on a device that allows only that.
    pub(crate) fn lower_workgroup_limit(&mut self, n: u32) {
        let l = &mut self.report.limits;
        l.max_compute_workgroups_per_dimension = l.max_compute_workgroups_per_dimension.min(n);
    }

    /// Whether kernels may read f16 (`shader-f16` enabled on the device).
    pub fn has_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// What this context (and its clones) asked of the device so far.
    pub fn work(&self) -> crate::model::engine::DeviceWork {
        let w = &self.work;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::model::engine::DeviceWork {
            submits: get(&w.submits),
            dispatches: get(&w.dispatches),
            buffers: get(&w.buffers),
            bind_groups: get(&w.bind_groups),
            read_backs: get(&w.read_backs),
        }
    }

    /// Err if the device was lost (every call from then on), or once for an
    /// error that escaped every scope since the last check.
    pub fn check_health(&self) -> Result<()> {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = &h.lost {
            return Err(Error::DeviceLost {
                adapter: self.adapter(),
                reason: reason.clone(),
            });
        }
        if let Some(message) = h.uncaptured.take() {
            return Err(Error::Validation {
                adapter: self.adapter(),
                what: "an earlier call outside any error scope".into(),
                message,
            });
        }
        Ok(())
    }

    /// `Device::poll`, with a lost device an error instead of a panic:
    /// wgpu 30 reports a device lost (or out of memory) during the wait as
    /// fatal and panics inside `poll`. The device is marked lost, so every
    /// later call says so too.
    #[cfg(not(target_arch = "wasm32"))]
    fn poll(&self, kind: wgpu::PollType) -> std::result::Result<(), String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.device.poll(kind))) {
            Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the device failed while waiting".into());
                let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
                h.lost.get_or_insert_with(|| message.clone());
                Err(message)
            }
        }
    }

    /// Runs `f` (device calls: creating buffers, pipelines, submitting)
    /// inside validation, out-of-memory and internal error scopes; the first
    /// error caught comes back as Err, a lost device as `DeviceLost`.
    pub async fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_health()?;
        // The scope guards are thread-local and !Send: push, run and pop
        // them before the first await, keeping only the (Send) futures.
        let (value, pops) = {
            let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
            let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let value = f();
            (value, [validation.pop(), internal.pop(), oom.pop()])
        };
        let mut first = None;
        for pop in pops {
            if let Some(e) = pop.await {
                first.get_or_insert(e);
            }
        }
        if first.is_some() {
            // A uniform or bind group made in this scope may be the broken
            // object: cached, it would fail every later call that reuses it.
            self.clear_caches();
            // A lost device shows first as validation errors on the objects
            // it invalidated; a non-blocking poll runs the lost callback, so
            // the error says what actually happened. (On the web the browser
            // runs callbacks itself.)
            #[cfg(not(target_arch = "wasm32"))]
            let _ = self.poll(wgpu::PollType::Poll);
        }
        self.check_health()?;
        match first {
            None => Ok(value),
            Some(e) => Err(self.device_error(what, e)),
        }
    }

    fn device_error(&self, what: &str, e: wgpu::Error) -> Error {
        let (adapter, what, message) = (self.adapter(), what.to_string(), e.to_string());
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory { adapter, what, message },
            wgpu::Error::Validation { .. } => Error::Validation { adapter, what, message },
            wgpu::Error::Internal { .. } => Error::Internal { adapter, what, message },
        }
    }

    /// Records commands with `record` into one encoder and submits them,
    /// all inside error scopes. If `record` returns Err (a kernel's shape
    /// check), nothing is submitted.
    pub async fn submit(&self, what: &str, record: impl FnOnce(&mut Recorder) -> Result<()>) -> Result<()> {
        self.scoped(what, || {
            let mut recorder = Recorder::new(
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(what) }),
            );
            record(&mut recorder)?;
            bump(&self.work.submits);
            self.queue.submit([recorder.finish()]);
            Ok(())
        })
        .await?
    }

    /// A storage buffer holding `data` (STORAGE | COPY_SRC | COPY_DST).
    pub async fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.check_buffer_size(label, bytes.len() as u64)?;
        self.scoped(label, || {
            self.buffer_with(
                label,
                bytes,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            )
        })
        .await
    }

    /// A buffer holding `bytes`, at least 4 of them (a zero-sized binding
    /// is invalid) and a multiple of 4. Written through the queue rather
    /// than `mapped_at_creation` (wgpu's `create_buffer_init`), which panics
    /// when the device is lost; the write lands before the next submission.
    fn buffer_with(&self, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let size = bytes.len().max(4).next_multiple_of(4);
        bump(&self.work.buffers);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if bytes.len() == size {
            self.queue.write_buffer(&buffer, 0, bytes);
        } else if !bytes.is_empty() {
            let mut padded = bytes.to_vec();
            padded.resize(size, 0);
            self.queue.write_buffer(&buffer, 0, &padded);
        }
        buffer
    }

    /// A zeroed storage buffer of `len` f32 (or u32) elements.
    pub async fn zeros(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        // In u64: on wasm32 a usize product of 2^30 floats wraps to 0.
        let bytes = (len.max(1) as u64).saturating_mul(4);
        self.check_buffer_size(label, bytes)?;
        self.scoped(label, || {
            bump(&self.work.buffers);
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .await
    }

    fn check_buffer_size(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self.limits().max_buffer_size;
        if bytes > limit {
            return Err(Error::Limit {
                adapter: self.adapter(),
                what: format!("buffer `{what}`"),
                needed: bytes,
                limit,
                limit_name: "max buffer size (bytes)",
            });
        }
        Ok(())
    }

    /// The first `len` f32 of `buffer`, copied to the host. Natively it
    /// polls the device until the copy is done; on the web it awaits the
    /// browser's callback and never blocks.
    pub async fn read_f32(&self, what: &str, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let staged = self
            .scoped(what, || {
                let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("read-back copy"),
                });
                let staged = self.stage(&mut encoder, what, buffer, len)?;
                bump(&self.work.submits);
                self.queue.submit([encoder.finish()]);
                Ok::<_, Error>(staged)
            })
            .await??;
        self.read_staged(staged).await
    }

    /// Records, into `encoder`, a copy of the first `len` f32 of `buffer`
    /// into a new staging buffer, to be read with [`Self::read_staged`]
    /// once the encoder is submitted: outputs then come back with the
    /// work that made them, in one submission.
    pub(crate) fn stage(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        what: &str,
        buffer: &wgpu::Buffer,
        len: usize,
    ) -> Result<Staged> {
        // (A `Recorder` passed here ends its open compute pass first.)
        let bytes = (len as u64).saturating_mul(4);
        if buffer.size() < bytes {
            return Err(Error::Shape {
                op: "read_f32",
                message: format!("{what}: {len} elements asked from a buffer of {} bytes", buffer.size()),
            });
        }
        if len == 0 {
            return Ok(Staged {
                what: what.to_string(),
                buffer: None,
            });
        }
        bump(&self.work.buffers);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        Ok(Staged {
            what: what.to_string(),
            buffer: Some(staging),
        })
    }

    /// The data of a staged copy, once its submission ran. Natively it
    /// polls the device until the copy is done; on the web it awaits the
    /// browser's callback and never blocks.
    pub(crate) async fn read_staged(&self, staged: Staged) -> Result<Vec<f32>> {
        let Staged { what, buffer } = staged;
        let what = what.as_str();
        let Some(staging) = buffer else {
            return Ok(Vec::new());
        };
        bump(&self.work.read_backs);
        let (sender, mut receiver) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            // The receiver only goes away if the caller's future was dropped.
            let _ = sender.send(r);
        });
        let read_back_error = |message: String| -> Error {
            match self.check_health() {
                Err(lost) => lost,
                Ok(()) => Error::ReadBack {
                    adapter: self.adapter(),
                    what: what.to_string(),
                    message,
                },
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        let mapped = {
            self.poll(wgpu::PollType::wait_indefinitely())
                .map_err(read_back_error)?;
            // After a complete wait the callback has run or is running: when
            // several threads poll one device, another thread's poll may be
            // the one calling it, a moment later. Give it a bounded grace
            // period (about a second); if it still has not run, the device is
            // gone, and awaiting would hang.
            let mut waited = 0;
            loop {
                match receiver.try_recv() {
                    Ok(Some(r)) => break r,
                    Ok(None) if waited < 200 => {
                        waited += 1;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        let _ = self.poll(wgpu::PollType::Poll);
                    }
                    Ok(None) => return Err(read_back_error("the map callback never ran".into())),
                    Err(_) => return Err(read_back_error("the map callback was dropped".into())),
                }
            }
        };
        #[cfg(target_arch = "wasm32")]
        let mapped = (&mut receiver)
            .await
            .map_err(|_| read_back_error("the map callback was dropped".into()))?;
        mapped.map_err(|e| read_back_error(e.to_string()))?;
        let data = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| read_back_error(e.to_string()))?;
            bytemuck::pod_collect_to_vec::<u8, f32>(&view)
        };
        staging.unmap();
        Ok(data)
    }

    /// Starts timing every compute pass (`gpu::profile`); false where the
    /// device has no timestamp queries. A profile already running restarts.
    pub fn profile_start(&self) -> bool {
        if !self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return false;
        }
        let mut profile = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        *profile = Some(super::profile::Profile::new(&self.device));
        true
    }

    /// True while a profile runs.
    pub fn profiling(&self) -> bool {
        self.profile.lock().map(|p| p.is_some()).unwrap_or(false)
    }

    /// Ends the profile and returns the time per kernel of the passes
    /// submitted since `profile_start`, longest first (empty if none ran).
    pub async fn profile_finish(&self) -> Result<Vec<crate::model::engine::KernelTime>> {
        let Some(profile) = self.profile.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(Vec::new());
        };
        let n = profile.labels.len() as u32;
        if n == 0 {
            return Ok(Vec::new());
        }
        let bytes = 16 * n as u64;
        let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel profile timestamps"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut staged = None;
        self.submit("kernel profile", |encoder| {
            encoder.resolve_query_set(&profile.set, 0..2 * n, &resolved, 0);
            staged = Some(self.stage(encoder, "kernel profile", &resolved, 4 * n as usize)?);
            Ok(())
        })
        .await?;
        let Some(staged) = staged else {
            return Ok(Vec::new());
        };
        let words = self.read_staged(staged).await?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(bytemuck::cast_slice::<f32, u8>(&words));
        Ok(super::profile::kernel_times(
            &profile.labels,
            &ticks,
            self.queue.get_timestamp_period(),
        ))
    }

    /// A uniform buffer holding `params`: the one made before for the same
    /// bytes, else a new one (`Caches`).
    pub(crate) fn uniform<P: bytemuck::Pod>(&self, label: &str, params: &P) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(params);
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = caches.uniforms.get(bytes) {
            return b.clone();
        }
        let buffer = self.buffer_with(label, bytes, wgpu::BufferUsages::UNIFORM);
        if caches.uniforms.len() >= CACHE_ENTRIES {
            caches.uniforms.clear();
        }
        caches.uniforms.insert(bytes.to_vec(), buffer.clone());
        buffer
    }

    /// Forgets what was kept for reuse (`Caches`), releasing the buffers
    /// only the cached bind groups still held.
    pub fn clear_caches(&self) {
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.uniforms.clear();
        caches.bind_groups.clear();
    }

    /// Err unless `buffer` holds `elements` 4-byte values and one binding
    /// may cover them.
    pub(crate) fn check_binding(
        &self,
        op: &'static str,
        name: &str,
        buffer: &wgpu::Buffer,
        elements: usize,
    ) -> Result<()> {
        let bytes = elements.max(1) as u64 * 4;
        if buffer.size() < bytes {
            return Err(Error::Shape {
                op,
                message: format!(
                    "buffer `{name}` holds {} elements, the sizes need {elements}",
                    buffer.size() / 4
                ),
            });
        }
        let limit = self.limits().max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(Error::Limit {
                adapter: self.adapter(),
                what: format!("{op}: binding `{name}`"),
                needed: bytes,
                limit,
                limit_name: "max storage buffer binding size (bytes)",
            });
        }
        Ok(())
    }

    /// Workgroup counts for `count` workgroups laid out in a 2-D grid, since
    /// one dimension holds at most `max_compute_workgroups_per_dimension`
    /// (65535 by default); shaders rebuild the linear index as
    /// `wid.x + wid.y * nwg.x` and return past `count`.
    pub(crate) fn grid(&self, what: &str, count: u64) -> Result<[u32; 3]> {
        let max = self.limits().max_compute_workgroups_per_dimension as u64;
        if count <= max {
            return Ok([count as u32, 1, 1]);
        }
        let y = count.div_ceil(max);
        if y > max {
            return Err(Error::Limit {
                adapter: self.adapter(),
                what: what.to_string(),
                needed: count,
                limit: max * max,
                limit_name: "workgroups per dispatch",
            });
        }
        Ok([max as u32, y as u32, 1])
    }

    /// Workgroup counts for a 2-D grid of `[x, y]` workgroups.
    pub(crate) fn grid_2d(&self, what: &str, x: u64, y: u64) -> Result<[u32; 3]> {
        let max = self.limits().max_compute_workgroups_per_dimension as u64;
        for n in [x, y] {
            if n > max {
                return Err(Error::Limit {
                    adapter: self.adapter(),
                    what: what.to_string(),
                    needed: n,
                    limit: max,
                    limit_name: "workgroups per dimension",
                });
            }
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Records one dispatch of `pipeline` with one bind group, in the
    /// compute pass `recorder` has open (consecutive dispatches share one
    /// pass: a pass costs the driver about 20 us on the H200, a dispatch
    /// within one about 5, docs/BENCH.md). While a profile runs, each
    /// dispatch gets its own pass, timed (`gpu::profile`).
    pub(crate) fn dispatch(
        &self,
        recorder: &mut Recorder,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        workgroups: [u32; 3],
    ) {
        if workgroups.contains(&0) {
            return;
        }
        bump(&self.work.dispatches);
        let mut profile = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(profile) = profile.as_mut() {
            let encoder: &mut wgpu::CommandEncoder = recorder;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: profile.next_pass(label),
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
            return;
        }
        drop(profile);
        let pass = recorder.pass();
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
    }

    /// A bind group over `storage` (buffer, elements) at bindings 0, 1, ..
    /// in order, then the uniform `params`. Each storage binding covers
    /// exactly the elements the sizes need (at least one), so a buffer may
    /// be larger than one binding allows.
    pub(crate) fn bind(
        &self,
        label: &str,
        layout: &wgpu::BindGroupLayout,
        storage: &[(&wgpu::Buffer, usize)],
        params: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        let key = BindKey {
            layout: layout.clone(),
            storage: storage.iter().map(|&(b, n)| (b.clone(), n)).collect(),
            params: params.clone(),
        };
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = caches.bind_groups.get(&key) {
            return g.clone();
        }
        let mut entries: Vec<wgpu::BindGroupEntry> = storage
            .iter()
            .enumerate()
            .map(|(i, &(buffer, elements))| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(elements.max(1) as u64 * 4),
                }),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: storage.len() as u32,
            resource: params.as_entire_binding(),
        });
        bump(&self.work.bind_groups);
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout,
            entries: &entries,
        });
        if caches.bind_groups.len() >= CACHE_ENTRIES {
            caches.bind_groups.clear();
        }
        caches.bind_groups.insert(key, group.clone());
        group
    }
}
