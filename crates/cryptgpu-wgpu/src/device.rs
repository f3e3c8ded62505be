//! Choosing an adapter, opening the device, and what every op needs from it: the ring
//! path, the binding limit that chunking respects, the bind group layouts (one for every
//! kernel with two inputs, one for the six inputs of `Kernel::Fused`), and the pipeline
//! cache.

use crate::error::WgpuError;
use crate::shaders::{Kernel, RingPath};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Elements per 256 bytes: every binding window starts at a multiple of this, which
/// satisfies any storage offset alignment an adapter may ask for (WebGPU caps it at 256).
pub(crate) const ALIGN: usize = 32;

/// The largest tensor, in elements: kernels index with `u32` and add small offsets.
pub(crate) const MAX_ELEMENTS: usize = 1 << 31;

/// Which 64-bit arithmetic the kernels use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Int64Mode {
    /// Native `u64` where the adapter has `SHADER_INT64`, emulated otherwise.
    #[default]
    Auto,
    /// Native `u64` only: an adapter without `SHADER_INT64` is refused.
    Native,
    /// Two 32-bit limbs per element, even where the adapter has `SHADER_INT64`.
    Emulated,
}

/// How to open a [`crate::WgpuBackend`].
#[derive(Clone, Debug)]
pub struct WgpuOptions {
    /// Native or emulated 64-bit arithmetic.
    pub int64: Int64Mode,
    /// A cap on the elements bound per storage binding, below the adapter's own limit:
    /// tests set it small to exercise chunking without allocating hundreds of MiB. It is
    /// rounded down to a multiple of 32 and raised to at least 64.
    pub max_binding_elements: Option<usize>,
    /// Use only an adapter whose name contains this (case-insensitive).
    pub adapter_name: Option<String>,
    /// Whether a software adapter (lavapipe, WARP, SwiftShader) may be used. Hardware is
    /// always preferred when there is one.
    pub allow_software: bool,
}

impl Default for WgpuOptions {
    fn default() -> Self {
        Self {
            int64: Int64Mode::Auto,
            max_binding_elements: None,
            adapter_name: None,
            allow_software: true,
        }
    }
}

/// Which adapter a backend runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// The adapter's name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)` or `NVIDIA H100`.
    pub name: String,
    /// The graphics API, e.g. `Vulkan`.
    pub api: String,
    /// The driver and its version, as reported.
    pub driver: String,
    /// The device type, e.g. `DiscreteGpu` or `Cpu`.
    pub device_type: String,
    /// Whether it is a software rasteriser running on the CPU (lavapipe and the like).
    pub is_software: bool,
    /// Whether the adapter has `SHADER_INT64`.
    pub has_int64: bool,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {}, {}{})",
            self.name,
            self.api,
            self.device_type,
            self.driver,
            if self.is_software { ", software" } else { "" }
        )
    }
}

/// An open device and everything the ops share.
pub(crate) struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) path: RingPath,
    pub(crate) adapter: AdapterSummary,
    /// Elements one storage binding may hold (a multiple of [`ALIGN`]).
    pub(crate) binding_limit: usize,
    /// Elements one buffer may hold.
    pub(crate) buffer_limit: usize,
    bind_group_layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    /// The layouts of [`Kernel::Fused`]: the bindings of `bind_group_layout` plus read
    /// storage bindings 4 to 7 for inputs 2 to 5. `None` where the adapter allows fewer
    /// than 7 storage buffers per shader stage; `fused` then runs one op per step.
    pub(crate) fused_layout: Option<(wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    /// Bound where a kernel has no input there.
    pub(crate) placeholder: wgpu::Buffer,
    pipelines: Mutex<HashMap<Kernel, wgpu::ComputePipeline>>,
    /// Uniform buffers of passes already submitted, by size class, for later passes to
    /// write their parameters into (`queue.write_buffer` is ordered after the submissions
    /// that read the old contents).
    uniforms: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

/// The most idle uniform buffers kept per size class.
const IDLE_UNIFORMS: usize = 64;

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.adapter)
            .field("path", &self.path)
            .field("binding_limit", &self.binding_limit)
            .finish_non_exhaustive()
    }
}

/// Preference among adapter types: hardware first, software last.
fn type_rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn summary(adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let name_lower = info.name.to_lowercase();
    AdapterSummary {
        is_software: info.device_type == wgpu::DeviceType::Cpu
            || ["llvmpipe", "lavapipe", "swiftshader", "warp", "softpipe"]
                .iter()
                .any(|s| name_lower.contains(s)),
        has_int64: adapter.features().contains(wgpu::Features::SHADER_INT64),
        name: info.name,
        api: format!("{:?}", info.backend),
        driver,
        device_type: format!("{:?}", info.device_type),
    }
}

/// Runs a wgpu future to completion on this thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

impl Context {
    /// Picks an adapter by `options` (hardware first) and opens a device on it.
    pub(crate) fn open(options: &WgpuOptions) -> Result<Self, WgpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            flags: wgpu::InstanceFlags::empty().with_env(),
            ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
        });
        let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        if adapters.is_empty() {
            return Err(WgpuError::NoAdapter(
                "wgpu finds no Vulkan, Metal or DX12 adapter (on Linux without a GPU, \
                 `apt-get install mesa-vulkan-drivers` adds the lavapipe software driver)"
                    .into(),
            ));
        }
        let mut seen = Vec::new();
        let mut candidates = Vec::new();
        for adapter in adapters {
            let info = summary(&adapter);
            let compute = adapter
                .get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS);
            let name_ok = options
                .adapter_name
                .as_ref()
                .is_none_or(|want| info.name.to_lowercase().contains(&want.to_lowercase()));
            let int64_ok = options.int64 != Int64Mode::Native || info.has_int64;
            let software_ok = options.allow_software || !info.is_software;
            if compute && name_ok && int64_ok && software_ok {
                candidates.push((adapter, info));
            } else {
                seen.push(info.to_string());
            }
        }
        candidates.sort_by_key(|(adapter, info)| {
            (type_rank(adapter.get_info().device_type), !info.has_int64)
        });
        let Some((adapter, info)) = candidates.into_iter().next() else {
            return Err(WgpuError::NoAdapter(format!(
                "none of the adapters fits the options {options:?}: {}",
                seen.join("; ")
            )));
        };
        let path = match options.int64 {
            Int64Mode::Native => RingPath::Native,
            Int64Mode::Emulated => RingPath::Emulated,
            Int64Mode::Auto if info.has_int64 => RingPath::Native,
            Int64Mode::Auto => RingPath::Emulated,
        };
        let required_features = match path {
            RingPath::Native => wgpu::Features::SHADER_INT64,
            RingPath::Emulated => wgpu::Features::empty(),
        };
        let limits = adapter.limits();
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cryptgpu"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|source| WgpuError::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;
        // Every op runs inside error scopes and returns what they catch; an error that
        // still escapes is reported, never a panic in a driver callback.
        device.on_uncaptured_error(Arc::new(|error| {
            eprintln!("cryptgpu-wgpu: uncaptured wgpu error: {error}");
        }));

        let device_binding = (limits.max_storage_buffer_binding_size / 8) as usize;
        let binding_limit = options
            .max_binding_elements
            .map_or(device_binding, |cap| cap.min(device_binding))
            .max(2 * ALIGN)
            / ALIGN
            * ALIGN;
        let buffer_limit = usize::try_from(limits.max_buffer_size / 8)
            .unwrap_or(usize::MAX)
            .min(MAX_ELEMENTS);

        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let entries = [
            storage(0, true),
            storage(1, true),
            storage(2, false),
            wgpu::BindGroupLayoutEntry {
                binding: 3,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
        ];
        let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("cryptgpu kernel bindings"),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("cryptgpu kernels"),
            bind_group_layouts: &[Some(&bind_group_layout)],
            immediate_size: 0,
        });
        // Six inputs and the output: seven storage buffers in one stage. Inputs 2 to 5 are
        // bindings 4 to 7, after the output (2) and the parameters (3).
        let fused_inputs = Kernel::FUSED_INPUTS as u32;
        let fused_layout =
            (limits.max_storage_buffers_per_shader_stage > fused_inputs).then(|| {
                let mut entries = entries.to_vec();
                entries.extend((4..fused_inputs + 2).map(|b| storage(b, true)));
                let bind_group_layout =
                    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("cryptgpu fused kernel bindings"),
                        entries: &entries,
                    });
                let pipeline_layout =
                    device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some("cryptgpu fused kernel"),
                        bind_group_layouts: &[Some(&bind_group_layout)],
                        immediate_size: 0,
                    });
                (bind_group_layout, pipeline_layout)
            });
        let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("cryptgpu placeholder"),
            size: 256,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(Self {
            device,
            queue,
            path,
            adapter: info,
            binding_limit,
            buffer_limit,
            bind_group_layout,
            pipeline_layout,
            fused_layout,
            placeholder,
            pipelines: Mutex::new(HashMap::new()),
            uniforms: Mutex::new(HashMap::new()),
        })
    }

    /// A uniform buffer for `bytes` bytes of a pass's parameters (rounded up to a size
    /// class), holding `contents` once the next submission starts: an idle one given back
    /// by [`Context::give_back_uniforms`], else a new one (counted as an allocation).
    pub(crate) fn uniform(&self, label: &'static str, contents: &[u8]) -> wgpu::Buffer {
        let class = (contents.len() as u64).next_power_of_two().max(64);
        let idle = self
            .uniforms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&class)
            .and_then(Vec::pop);
        let buffer = idle.unwrap_or_else(|| {
            cryptgpu_backend::counters::record_allocation(class);
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: class,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        self.queue.write_buffer(&buffer, 0, contents);
        buffer
    }

    /// Returns the uniform buffers of passes just submitted to the pool.
    pub(crate) fn give_back_uniforms(&self, buffers: Vec<wgpu::Buffer>) {
        let mut pool = self.uniforms.lock().unwrap_or_else(|p| p.into_inner());
        for buffer in buffers {
            let idle = pool.entry(buffer.size()).or_default();
            if idle.len() < IDLE_UNIFORMS {
                idle.push(buffer);
            }
        }
    }

    /// The bind group layout and pipeline layout of `kernel`: [`Context::fused_layout`]
    /// for [`Kernel::Fused`] (an error where the adapter has none), the shared ones for
    /// every other kernel.
    pub(crate) fn layouts(
        &self,
        op: &'static str,
        kernel: Kernel,
    ) -> Result<(&wgpu::BindGroupLayout, &wgpu::PipelineLayout), WgpuError> {
        match kernel {
            Kernel::Fused => self
                .fused_layout
                .as_ref()
                .map(|(group, pipeline)| (group, pipeline))
                .ok_or_else(|| WgpuError::TooLarge {
                    op,
                    why: format!(
                        "the fused kernel binds {} storage buffers, more than this adapter \
                         allows in one shader stage",
                        Kernel::FUSED_INPUTS + 1
                    ),
                }),
            _ => Ok((&self.bind_group_layout, &self.pipeline_layout)),
        }
    }

    /// The compute pipeline of `kernel` with its `layout`
    /// ([`Context::layouts`]), built on first use and cached. Call inside an error scope:
    /// a shader that fails to compile is reported there.
    pub(crate) fn pipeline(
        &self,
        kernel: Kernel,
        layout: &wgpu::PipelineLayout,
    ) -> wgpu::ComputePipeline {
        let mut cache = self
            .pipelines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .entry(kernel)
            .or_insert_with(|| {
                let module = self
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(kernel.entry_point()),
                        source: wgpu::ShaderSource::Wgsl(kernel.source(self.path).into()),
                    });
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(kernel.entry_point()),
                        layout: Some(layout),
                        module: &module,
                        entry_point: Some(kernel.entry_point()),
                        compilation_options: Default::default(),
                        cache: None,
                    })
            })
            .clone()
    }
}

impl Context {
    /// Runs `work` inside wgpu error scopes and returns the first error they caught
    /// (validation, out of memory, internal) as this op's error.
    pub(crate) fn scoped<T>(
        &self,
        op: &'static str,
        work: impl FnOnce() -> Result<T, WgpuError>,
    ) -> Result<T, WgpuError> {
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let result = work();
        let caught = [
            block_on(internal.pop()),
            block_on(validation.pop()),
            block_on(out_of_memory.pop()),
        ];
        match caught.into_iter().flatten().next() {
            Some(error) => Err(WgpuError::Wgpu {
                op,
                message: error.to_string(),
            }),
            None => result,
        }
    }

    /// Waits until the device has finished all submitted work.
    pub(crate) fn wait(&self, op: &'static str) -> Result<(), WgpuError> {
        cryptgpu_backend::counters::record_sync();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(drop)
            .map_err(|source| WgpuError::Poll { op, source })
    }
}
