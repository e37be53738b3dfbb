//! CUDA through the driver API, opened at run time.
//!
//! cudarc finds and opens the driver library (`libcuda.so`, whichever name the system has); this
//! module loads the handful of entry points dlbridge calls from it, once, with their result
//! typed as a plain integer: a status code newer than cudarc's enum must be an error message,
//! not undefined behaviour, and a missing entry point must be an error, not cudarc's panic.
//!
//! Every answer is cached: the first CUDA request of the process decides whether a driver and
//! devices exist. A machine without them gets `ErrorKind::Device` with a message naming what is
//! missing, and `device_count()` is 0.
//!
//! Work runs in a device's primary context (the one PyTorch, JAX and CuPy use), made current
//! for the duration of each operation by a [`Scope`] and restored afterwards, on the calling
//! thread's default stream (`CU_STREAM_PER_THREAD`: threads do not wait for each other). Every
//! operation is complete when it returns.

use std::ffi::{CStr, c_char, c_int, c_uchar, c_uint, c_void};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys::{CUDA_MEMCPY2D, CUcontext, CUdevice, CUdeviceptr, CUevent, CUmemorytype, CUstream};

use crate::error::{Error, ErrorKind, Result};

/// A driver status, read as an integer.
type Status = c_int;

const SUCCESS: Status = 0;
const OUT_OF_MEMORY: Status = 2;
const NO_DEVICE: Status = 100;
/// `CU_MEMHOSTALLOC_PORTABLE`: pinned memory usable from every context. Deliberately not
/// write-combined, which the CPU reads very slowly.
const MEMHOSTALLOC_PORTABLE: c_uint = 1;
const EVENT_DISABLE_TIMING: c_uint = 2;
/// The largest pitch the driver's 2-D copies accept (`CU_DEVICE_ATTRIBUTE_MAX_PITCH` on every
/// current GPU).
pub const MAX_PITCH: usize = i32::MAX as usize;

/// `CU_STREAM_PER_THREAD`: the calling thread's default stream.
fn per_thread_stream() -> CUstream {
    std::ptr::without_provenance_mut(2)
}

/// Declares the entry points: one struct field per function, loaded by name.
macro_rules! entry_points {
    ($($field:ident = $name:literal ($($arg:ty),*);)*) => {
        struct Api {
            $($field: unsafe extern "C" fn($($arg),*) -> Status,)*
        }

        impl Api {
            /// # Safety
            /// The library must be a CUDA driver, so that each symbol has the declared signature.
            unsafe fn load() -> Result<Api> {
                // SAFETY: only reached after `is_culib_present()` said the library opens.
                let lib = unsafe { cudarc::driver::sys::culib() };
                Ok(Api {
                    $($field: {
                        // SAFETY: the signature is the driver API's for this name.
                        let symbol = unsafe {
                            lib.get::<unsafe extern "C" fn($($arg),*) -> Status>(concat!($name, "\0").as_bytes())
                        };
                        *symbol.map_err(|e| Error::device(format_args!(
                            "the CUDA driver library lacks {} ({e}); dlbridge needs a driver from CUDA 12.8 or later",
                            $name
                        )))?
                    },)*
                })
            }
        }
    };
}

entry_points! {
    init = "cuInit"(c_uint);
    device_get_count = "cuDeviceGetCount"(*mut c_int);
    device_get = "cuDeviceGet"(*mut CUdevice, c_int);
    primary_ctx_retain = "cuDevicePrimaryCtxRetain"(*mut CUcontext, CUdevice);
    ctx_push = "cuCtxPushCurrent_v2"(CUcontext);
    ctx_pop = "cuCtxPopCurrent_v2"(*mut CUcontext);
    ctx_synchronize = "cuCtxSynchronize"();
    mem_alloc = "cuMemAlloc_v2"(*mut CUdeviceptr, usize);
    mem_free = "cuMemFree_v2"(CUdeviceptr);
    mem_host_alloc = "cuMemHostAlloc"(*mut *mut c_void, usize, c_uint);
    mem_free_host = "cuMemFreeHost"(*mut c_void);
    memset_d8 = "cuMemsetD8Async"(CUdeviceptr, c_uchar, usize, CUstream);
    memcpy_htod = "cuMemcpyHtoDAsync_v2"(CUdeviceptr, *const c_void, usize, CUstream);
    memcpy_dtoh = "cuMemcpyDtoHAsync_v2"(*mut c_void, CUdeviceptr, usize, CUstream);
    memcpy_dtod = "cuMemcpyDtoDAsync_v2"(CUdeviceptr, CUdeviceptr, usize, CUstream);
    memcpy_2d = "cuMemcpy2DAsync_v2"(*const CUDA_MEMCPY2D, CUstream);
    memcpy_peer = "cuMemcpyPeerAsync"(CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, usize, CUstream);
    stream_synchronize = "cuStreamSynchronize"(CUstream);
    event_create = "cuEventCreate"(*mut CUevent, c_uint);
    event_record = "cuEventRecord"(CUevent, CUstream);
    event_synchronize = "cuEventSynchronize"(CUevent);
    event_destroy = "cuEventDestroy_v2"(CUevent);
    get_error_name = "cuGetErrorName"(Status, *mut *const c_char);
    ipc_get_mem_handle = "cuIpcGetMemHandle"(*mut IpcMemHandle, CUdeviceptr);
    ipc_open_mem_handle = "cuIpcOpenMemHandle_v2"(*mut CUdeviceptr, IpcMemHandle, c_uint);
    ipc_close_mem_handle = "cuIpcCloseMemHandle"(CUdeviceptr);
    mem_get_address_range = "cuMemGetAddressRange_v2"(*mut CUdeviceptr, *mut usize, CUdeviceptr);
}

/// `CUipcMemHandle`: 64 opaque bytes, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpcMemHandle(pub [u8; 64]);

/// `CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS`, the only flag cuIpcOpenMemHandle takes.
const IPC_MEM_LAZY_ENABLE_PEER_ACCESS: c_uint = 1;

/// A primary context handle; the driver lets any thread use it.
#[derive(Clone, Copy)]
struct Context(CUcontext);
// SAFETY: CUDA contexts are process-wide objects the driver synchronises itself.
unsafe impl Send for Context {}
// SAFETY: as for Send.
unsafe impl Sync for Context {}

/// The loaded driver and its devices.
pub struct Driver {
    api: Api,
    /// One lazily retained primary context per device (retaining creates it, which costs device
    /// memory, so only devices that are used get one). Never released: deleters may run until
    /// the process exits.
    contexts: Vec<OnceLock<Result<Context>>>,
}

static DRIVER: OnceLock<Result<Driver>> = OnceLock::new();

/// The driver, loaded on first use; the error says what is missing.
pub fn driver() -> Result<&'static Driver> {
    DRIVER.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// How many CUDA devices this process can use: 0 without a driver or devices. Never fails.
pub fn device_count() -> i32 {
    driver().map_or(0, |d| d.contexts.len() as i32)
}

fn load() -> Result<Driver> {
    if cfg!(miri) {
        return Err(Error::device("CUDA is not available under Miri"));
    }
    // SAFETY: opening the driver library runs its initialisers, which is what they are for.
    // cudarc panics on the first call when no library opens, so this check comes first.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::device(
            "no CUDA driver library (libcuda.so) could be opened: install the NVIDIA driver, or \
             put the directory holding libcuda.so on LD_LIBRARY_PATH",
        ));
    }
    // SAFETY: the library that opened is the CUDA driver.
    let api = unsafe { Api::load() }?;
    // SAFETY: cuInit takes flags 0.
    let status = unsafe { (api.init)(0) };
    if status == NO_DEVICE {
        return Err(Error::device("the CUDA driver is installed but found no GPU (CUDA_ERROR_NO_DEVICE)"));
    }
    api.check(status, "cuInit")?;
    let mut count: c_int = 0;
    // SAFETY: `count` is a valid out-pointer.
    api.check(unsafe { (api.device_get_count)(&mut count) }, "cuDeviceGetCount")?;
    if count <= 0 {
        return Err(Error::device("the CUDA driver is installed but reports no GPU"));
    }
    let mut contexts = Vec::new();
    contexts
        .try_reserve_exact(count as usize)
        .map_err(|_| Error::out_of_memory("allocating the CUDA context table failed"))?;
    contexts.resize_with(count as usize, OnceLock::new);
    Ok(Driver { api, contexts })
}

impl Api {
    /// Turns a driver status into a result; `what` names the call for the message.
    fn check(&self, status: Status, what: impl std::fmt::Display) -> Result<()> {
        if status == SUCCESS {
            return Ok(());
        }
        let kind = if status == OUT_OF_MEMORY { ErrorKind::OutOfMemory } else { ErrorKind::Device };
        let mut name: *const c_char = std::ptr::null();
        // SAFETY: `name` is a valid out-pointer; the driver hands back a static string or fails.
        let named = unsafe { (self.get_error_name)(status, &mut name) } == SUCCESS && !name.is_null();
        if !named {
            return Err(Error::new(kind, format_args!("{what} failed: CUDA error {status}")));
        }
        // SAFETY: a NUL-terminated static string from the driver.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        Err(Error::new(kind, format_args!("{what} failed: {name}")))
    }
}

impl Driver {
    fn context(&self, device: i32) -> Result<Context> {
        let count = self.contexts.len();
        let slot = usize::try_from(device).ok().and_then(|i| self.contexts.get(i)).ok_or_else(|| {
            Error::device(format_args!(
                "cuda:{device} does not exist: the CUDA driver reports {count} device(s)"
            ))
        })?;
        slot.get_or_init(|| {
            let mut dev: CUdevice = 0;
            // SAFETY: valid out-pointers; `device` is below the device count.
            self.api.check(unsafe { (self.api.device_get)(&mut dev, device) }, "cuDeviceGet")?;
            let mut ctx: CUcontext = std::ptr::null_mut();
            // SAFETY: as above.
            let status = unsafe { (self.api.primary_ctx_retain)(&mut ctx, dev) };
            self.api.check(status, "cuDevicePrimaryCtxRetain")?;
            Ok(Context(ctx))
        })
        .clone()
    }

    /// Makes device `device`'s primary context current on this thread until the scope ends.
    pub fn enter(&'static self, device: i32) -> Result<Scope> {
        let ctx = self.context(device)?;
        // SAFETY: a context retained from this driver.
        self.api.check(unsafe { (self.api.ctx_push)(ctx.0) }, "cuCtxPushCurrent")?;
        Ok(Scope { driver: self, device, ctx, _not_send: std::marker::PhantomData })
    }
}

/// A CUDA event of one device's context, made by [`Scope::create_event`] and destroyed when
/// dropped.
pub struct Event {
    driver: &'static Driver,
    raw: CUevent,
}

// SAFETY: events are process-wide driver objects that any thread may record, wait on or destroy.
unsafe impl Send for Event {}

impl Event {
    /// Waits until the work queued before the event was recorded is done; the driver's status.
    fn synchronize(&self) -> Status {
        // SAFETY: a live event (we own it).
        unsafe { (self.driver.api.event_synchronize)(self.raw) }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by `create_event` and used by nobody after this (we own it). A failure
        // leaves nothing to do.
        unsafe { (self.driver.api.event_destroy)(self.raw) };
    }
}

/// Host or device memory, as a copy's source or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mem {
    Host(*mut u8),
    Device(CUdeviceptr),
}

impl Mem {
    /// The address `bytes` further on.
    pub fn offset(self, bytes: usize) -> Mem {
        match self {
            Mem::Host(p) => Mem::Host(p.wrapping_add(bytes)),
            Mem::Device(p) => Mem::Device(p + bytes as CUdeviceptr),
        }
    }

    /// The address `bytes` further on (or back).
    pub fn offset_signed(self, bytes: isize) -> Mem {
        match self {
            Mem::Host(p) => Mem::Host(p.wrapping_offset(bytes)),
            Mem::Device(p) => Mem::Device(p.wrapping_add_signed(bytes as i64)),
        }
    }
}

/// A device's context, current on this thread while the scope lives. Every CUDA operation goes
/// through one; dropping it restores the thread's previous context.
pub struct Scope {
    driver: &'static Driver,
    device: i32,
    ctx: Context,
    /// A context is current on one thread: the scope must end on the thread that began it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        let mut popped: CUcontext = std::ptr::null_mut();
        // SAFETY: undoes the push in `enter` on the same thread (Scope is not Send).
        unsafe { (self.driver.api.ctx_pop)(&mut popped) };
    }
}

impl Scope {
    fn check(&self, status: Status, what: impl std::fmt::Display) -> Result<()> {
        self.driver
            .api
            .check(status, what)
            .map_err(|e| Error::new(e.kind, format_args!("cuda:{}: {}", self.device, e.message)))
    }

    /// Device memory; `len` > 0.
    pub fn alloc(&self, len: usize) -> Result<CUdeviceptr> {
        let mut ptr: CUdeviceptr = 0;
        // SAFETY: valid out-pointer.
        let status = unsafe { (self.driver.api.mem_alloc)(&mut ptr, len) };
        self.check(status, format_args!("cuMemAlloc of {len} bytes"))?;
        Ok(ptr)
    }

    /// Frees device memory once all work on the device is done: a consumer may have queued
    /// kernels that read it on a stream of its own, so the free waits for the whole device.
    ///
    /// # Safety
    /// `ptr` came from [`Scope::alloc`] on this device and is not used afterwards.
    pub unsafe fn free(&self, ptr: CUdeviceptr) -> Result<()> {
        // SAFETY: no arguments.
        self.check(unsafe { (self.driver.api.ctx_synchronize)() }, "cuCtxSynchronize")?;
        // SAFETY: per the caller's contract.
        self.check(unsafe { (self.driver.api.mem_free)(ptr) }, "cuMemFree")
    }

    /// The IPC handle of the allocation `ptr` (from [`Scope::alloc`]) starts, after the device
    /// has finished the work queued on it (another process may read it at once).
    pub fn ipc_get(&self, ptr: CUdeviceptr) -> Result<IpcMemHandle> {
        self.synchronize()?;
        let mut handle = IpcMemHandle([0; 64]);
        // SAFETY: a valid out-pointer; the driver checks `ptr`.
        let status = unsafe { (self.driver.api.ipc_get_mem_handle)(&mut handle, ptr) };
        self.check(status, "cuIpcGetMemHandle")?;
        Ok(handle)
    }

    /// Opens another process's allocation from its IPC handle: its base address in this
    /// process and its size as the driver reports it (never as the handle's sender claims).
    pub fn ipc_open(&self, handle: IpcMemHandle) -> Result<(CUdeviceptr, usize)> {
        let mut ptr: CUdeviceptr = 0;
        // SAFETY: a valid out-pointer and a handle passed by value.
        let status = unsafe {
            (self.driver.api.ipc_open_mem_handle)(&mut ptr, handle, IPC_MEM_LAZY_ENABLE_PEER_ACCESS)
        };
        self.check(status, "cuIpcOpenMemHandle")?;
        let (mut base, mut len): (CUdeviceptr, usize) = (0, 0);
        // SAFETY: valid out-pointers; `ptr` is a live mapping.
        let status = unsafe { (self.driver.api.mem_get_address_range)(&mut base, &mut len, ptr) };
        if let Err(e) = self.check(status, "cuMemGetAddressRange") {
            // SAFETY: opened just above, used by nobody.
            let _ = unsafe { self.ipc_close(ptr) };
            return Err(e);
        }
        Ok((ptr, len))
    }

    /// Closes a mapping from [`Scope::ipc_open`] once the device is done with it.
    ///
    /// # Safety
    /// `ptr` came from [`Scope::ipc_open`] on this device and is not used afterwards.
    pub unsafe fn ipc_close(&self, ptr: CUdeviceptr) -> Result<()> {
        // SAFETY: no arguments.
        self.check(unsafe { (self.driver.api.ctx_synchronize)() }, "cuCtxSynchronize")?;
        // SAFETY: per the caller's contract.
        self.check(unsafe { (self.driver.api.ipc_close_mem_handle)(ptr) }, "cuIpcCloseMemHandle")
    }

    /// Pinned (page-locked), portable, not write-combined host memory; `len` > 0.
    pub fn alloc_pinned(&self, len: usize) -> Result<*mut u8> {
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        let status = unsafe { (self.driver.api.mem_host_alloc)(&mut ptr, len, MEMHOSTALLOC_PORTABLE) };
        self.check(status, format_args!("cuMemHostAlloc of {len} bytes"))?;
        Ok(ptr.cast())
    }

    /// Frees pinned memory once all work on the device is done.
    ///
    /// # Safety
    /// `ptr` came from [`Scope::alloc_pinned`] and is not used afterwards.
    pub unsafe fn free_pinned(&self, ptr: *mut u8) -> Result<()> {
        // SAFETY: no arguments.
        self.check(unsafe { (self.driver.api.ctx_synchronize)() }, "cuCtxSynchronize")?;
        // SAFETY: per the caller's contract.
        self.check(unsafe { (self.driver.api.mem_free_host)(ptr.cast()) }, "cuMemFreeHost")
    }

    /// Queues zeroing `len` bytes of device memory.
    ///
    /// # Safety
    /// The range must be device memory this program may write.
    pub unsafe fn zero(&self, ptr: CUdeviceptr, len: usize) -> Result<()> {
        // SAFETY: per the caller's contract.
        let status = unsafe { (self.driver.api.memset_d8)(ptr, 0, len, per_thread_stream()) };
        self.check(status, "cuMemsetD8Async")
    }

    /// Queues a copy of `len` bytes. Host-to-host copies are not the driver's business.
    ///
    /// # Safety
    /// Both ranges must be valid for the copy until the stream is synchronised; host memory that
    /// is not pinned is read or written by the time this returns or later, at the driver's will.
    pub unsafe fn copy(&self, dst: Mem, src: Mem, len: usize) -> Result<()> {
        let api = &self.driver.api;
        let stream = per_thread_stream();
        // SAFETY: per the caller's contract.
        let (status, what) = unsafe {
            match (dst, src) {
                (Mem::Device(d), Mem::Host(s)) => {
                    ((api.memcpy_htod)(d, s.cast(), len, stream), "cuMemcpyHtoDAsync")
                }
                (Mem::Host(d), Mem::Device(s)) => {
                    ((api.memcpy_dtoh)(d.cast(), s, len, stream), "cuMemcpyDtoHAsync")
                }
                (Mem::Device(d), Mem::Device(s)) => {
                    ((api.memcpy_dtod)(d, s, len, stream), "cuMemcpyDtoDAsync")
                }
                (Mem::Host(_), Mem::Host(_)) => unreachable!("host copies do not go through the driver"),
            }
        };
        self.check(status, format_args!("{what} of {len} bytes"))
    }

    /// Queues a 2-D copy: `height` rows of `width` bytes, rows `dst_pitch` and `src_pitch` bytes
    /// apart (each at least `width` and at most [`MAX_PITCH`]).
    ///
    /// # Safety
    /// As for [`Scope::copy`], for every row.
    pub unsafe fn copy_2d(
        &self,
        dst: Mem,
        dst_pitch: usize,
        src: Mem,
        src_pitch: usize,
        width: usize,
        height: usize,
    ) -> Result<()> {
        let (src_type, src_host, src_device) = match src {
            Mem::Host(s) => (CUmemorytype::CU_MEMORYTYPE_HOST, s.cast_const().cast(), 0),
            Mem::Device(s) => (CUmemorytype::CU_MEMORYTYPE_DEVICE, std::ptr::null(), s),
        };
        let (dst_type, dst_host, dst_device) = match dst {
            Mem::Host(d) => (CUmemorytype::CU_MEMORYTYPE_HOST, d.cast(), 0),
            Mem::Device(d) => (CUmemorytype::CU_MEMORYTYPE_DEVICE, std::ptr::null_mut(), d),
        };
        let p = CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: src_type,
            srcHost: src_host,
            srcDevice: src_device,
            srcArray: std::ptr::null_mut(),
            srcPitch: src_pitch,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: dst_type,
            dstHost: dst_host,
            dstDevice: dst_device,
            dstArray: std::ptr::null_mut(),
            dstPitch: dst_pitch,
            WidthInBytes: width,
            Height: height,
        };
        // SAFETY: per the caller's contract; `p` outlives the call (the driver copies it).
        let status = unsafe { (self.driver.api.memcpy_2d)(&p, per_thread_stream()) };
        self.check(status, format_args!("cuMemcpy2DAsync of {height} rows of {width} bytes"))
    }

    /// Queues a copy of `len` bytes from device memory on `src_device` to this scope's device.
    ///
    /// # Safety
    /// As for [`Scope::copy`].
    pub unsafe fn copy_peer(
        &self,
        dst: CUdeviceptr,
        src: CUdeviceptr,
        src_device: i32,
        len: usize,
    ) -> Result<()> {
        let src_ctx = self.driver.context(src_device)?;
        // SAFETY: per the caller's contract; both contexts are retained.
        let status = unsafe {
            (self.driver.api.memcpy_peer)(dst, self.ctx.0, src, src_ctx.0, len, per_thread_stream())
        };
        self.check(status, format_args!("cuMemcpyPeerAsync of {len} bytes from cuda:{src_device}"))
    }

    /// Waits until everything this thread queued on the device is done.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: the per-thread stream handle is always valid.
        self.check(
            unsafe { (self.driver.api.stream_synchronize)(per_thread_stream()) },
            "cuStreamSynchronize",
        )
    }

    pub fn create_event(&self) -> Result<Event> {
        let mut event: CUevent = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        let status = unsafe { (self.driver.api.event_create)(&mut event, EVENT_DISABLE_TIMING) };
        self.check(status, "cuEventCreate")?;
        Ok(Event { driver: self.driver, raw: event })
    }

    /// Marks the current end of this thread's queue.
    pub fn record(&self, event: &Event) -> Result<()> {
        // SAFETY: an event created by `create_event` and alive (the borrow keeps it so).
        self.check(unsafe { (self.driver.api.event_record)(event.raw, per_thread_stream()) }, "cuEventRecord")
    }

    /// Waits until the work queued before `event` was recorded is done.
    pub fn wait(&self, event: &Event) -> Result<()> {
        self.check(event.synchronize(), "cuEventSynchronize")
    }
}

/// Bytes per staging buffer: host data that is not pinned moves through two such pinned buffers
/// in turn, so that packing one chunk on the CPU overlaps the transfer of the previous one.
/// `DLBRIDGE_CUDA_STAGING_BYTES` overrides it (the tests use small values to exercise chunking).
pub fn staging_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("DLBRIDGE_CUDA_STAGING_BYTES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(4 << 20, |n| n.clamp(256, 1 << 30))
    })
}

/// Two pinned buffers and the events that say when the driver is done with each, for one device.
/// Dropping it hands the pair back to the pool for reuse once the driver is done with it, or
/// frees it (when the pool is full or the driver failed): on every path out of a transfer, a
/// panic included.
pub struct Staging {
    pair: Option<Pair>,
}

/// The resources of a staging pair, freed when dropped.
struct Pair {
    device: i32,
    buffers: [*mut u8; 2],
    events: [Option<Event>; 2],
}

// SAFETY: pinned memory and events are process-wide driver objects; a pair is used by one
// thread at a time (it is taken out of the pool while in use).
unsafe impl Send for Pair {}

/// Idle staging pairs, at most [`POOL_LIMIT`] per device.
static POOL: Mutex<Vec<Pair>> = Mutex::new(Vec::new());
const POOL_LIMIT: usize = 2;

impl Staging {
    /// A staging pair for the scope's device: a pooled one, or a new one.
    pub fn take(scope: &Scope) -> Result<Staging> {
        let pooled = {
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            pool.iter().position(|s| s.device == scope.device).map(|i| pool.swap_remove(i))
        };
        if let Some(pair) = pooled {
            return Ok(Staging { pair: Some(pair) });
        }
        // On an error part-way, dropping `pair` frees what was made.
        let mut pair =
            Pair { device: scope.device, buffers: [std::ptr::null_mut(); 2], events: [None, None] };
        for i in 0..2 {
            pair.buffers[i] = scope.alloc_pinned(staging_bytes())?;
            pair.events[i] = Some(scope.create_event()?);
        }
        Ok(Staging { pair: Some(pair) })
    }

    fn pair(&self) -> &Pair {
        self.pair.as_ref().expect("a staging pair is only taken out when dropped")
    }

    /// Pinned buffer `i` (0 or 1), `staging_bytes()` long.
    pub fn buffer(&self, i: usize) -> *mut u8 {
        self.pair().buffers[i]
    }

    /// The event that marks when buffer `i`'s last transfer is done.
    pub fn event(&self, i: usize) -> &Event {
        self.pair().events[i].as_ref().expect("a staging pair from `take` has both events")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let Some(pair) = self.pair.take() else { return };
        let idle = pair.events.iter().flatten().all(|e| e.synchronize() == SUCCESS);
        if idle {
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            let room = pool.iter().filter(|s| s.device == pair.device).count() < POOL_LIMIT;
            if room && pool.try_reserve(1).is_ok() {
                pool.push(pair);
            }
        }
        // Otherwise `pair` is dropped here, which frees it.
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // The events destroy themselves; the buffers need the device's context.
        let Ok(scope) = driver().and_then(|d| d.enter(self.device)) else { return };
        for &b in &self.buffers {
            if !b.is_null() {
                // SAFETY: allocated by `Staging::take` on this device; no longer used. A
                // failure leaves nothing to do.
                let _ = unsafe { scope.free_pinned(b) };
            }
        }
    }
}
