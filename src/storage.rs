//! Storage: the memory behind tensors, shared through [`Shared`] (a fallible `Arc`). An alias, a
//! view and an exported DLPack tensor each hold one reference; the memory (or the foreign
//! release, or the producer's deleter) goes exactly once, when the last reference goes, on
//! whichever thread that is.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::alloc::Shared;
use crate::cuda;
use crate::device::{Device, DeviceKind};
use crate::error::{Error, Result};
use crate::host_memory::{self, HostBlock};
use crate::shared_memory::Segment;

/// Data buffers alive right now: one per `Storage`, whatever its owner.
static LIVE: AtomicI64 = AtomicI64::new(0);

/// How many storages (own allocations, wrapped buffers, imported tensors) are alive.
pub fn live_allocations() -> i64 {
    LIVE.load(Ordering::SeqCst)
}

#[cfg(test)]
thread_local! {
    /// `LIVE`, counted on each thread: storages made minus storages released on it. Unit tests
    /// run in parallel in one process, so a test that checks for leaks reads this instead of the
    /// process-wide count, which the other tests move.
    static LIVE_HERE: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Storages made on this thread minus storages released on it (tests only).
#[cfg(test)]
pub fn live_allocations_on_this_thread() -> i64 {
    LIVE_HERE.with(|c| c.get())
}

/// Counts a storage made (`+1`) or released (`-1`).
fn count_live(delta: i64) {
    LIVE.fetch_add(delta, Ordering::SeqCst);
    #[cfg(test)]
    LIVE_HERE.with(|c| c.set(c.get() + delta));
}

/// Host allocations up to this many bytes live in the storage's own record.
const INLINE_MAX_BYTES: usize = 4096;

/// A release callback for memory the caller lent us: `release(ctx)`, called exactly once.
pub type ReleaseFn = unsafe extern "C" fn(ctx: *mut c_void);

/// Who frees the memory when the storage goes.
pub enum Owner {
    /// dlbridge's own allocation (None when zero bytes were asked for).
    Host(#[allow(dead_code, reason = "held for its Drop, which gives the block back")] Option<HostBlock>),
    /// dlbridge's own small host allocation, which lives in the storage's own record (see
    /// `Storage::allocate_host`) and goes with it.
    Inline,
    /// Memory lent by the caller of `dlb_tensor_from_data`.
    Foreign { release: Option<ReleaseFn>, ctx: *mut c_void },
    /// An imported DLPack tensor; dropping the deleter runs the producer's deleter.
    Imported(
        #[allow(dead_code, reason = "held for its Drop, which runs the producer's deleter")]
        dlpark::AllocationDeleter,
    ),
    /// dlbridge's own CUDA device memory (`cuMemAlloc`).
    CudaDevice,
    /// dlbridge's own pinned host memory (`cuMemHostAlloc`).
    CudaPinned,
    /// Host memory other processes can map: a sealed memory file, made here or imported from
    /// a handle. Dropping it unmaps it and closes this process's descriptor; the kernel frees
    /// the memory when no process maps or names it any more.
    Shared(Segment),
    /// CUDA device memory of another process, opened from its IPC handle
    /// (`cuIpcOpenMemHandle`); closed with `cuIpcCloseMemHandle`.
    CudaIpc,
}

/// A block of memory: the bytes `[base, base + len)` tensors on it may reach.
pub struct Storage {
    base: *mut u8,
    len: usize,
    device: Device,
    owner: Owner,
}

// SAFETY: a storage is plain memory plus a release step. The release callbacks and DLPack
// deleters are required by contract to run on any thread, and the memory itself is only reached
// through raw pointers whose synchronisation is the users' business, as in every tensor library.
unsafe impl Send for Storage {}
// SAFETY: shared access never mutates the storage itself (see Send).
unsafe impl Sync for Storage {}

impl Storage {
    /// Shares a storage. When that allocation fails the storage is dropped, which releases its
    /// memory: right for dlbridge's own allocations (see `borrowed` for lent memory).
    fn new(base: *mut u8, len: usize, device: Device, owner: Owner) -> Result<Shared<Storage>> {
        Storage::share(Storage::counted(base, len, device, owner)).map_err(|(e, storage)| {
            drop(storage);
            e
        })
    }

    fn counted(base: *mut u8, len: usize, device: Device, owner: Owner) -> Storage {
        count_live(1);
        Storage { base, len, device, owner }
    }

    fn share(storage: Storage) -> std::result::Result<Shared<Storage>, (Error, Storage)> {
        Shared::try_new(storage).map_err(|storage| {
            (Error::out_of_memory("allocating the shared record of a tensor's memory failed"), storage)
        })
    }

    /// The owner back, without releasing anything (the storage was never shared).
    fn into_owner(self) -> Owner {
        let this = std::mem::ManuallyDrop::new(self);
        count_live(-1);
        // SAFETY: `this` is never dropped, so the owner is moved out exactly once.
        unsafe { std::ptr::read(&this.owner) }
    }

    /// Allocates `len` bytes on `device`, zeroed if asked, aligned to 256 bytes.
    pub fn allocate(device: Device, len: usize, zeroed: bool) -> Result<Shared<Storage>> {
        device.ensure_runtime()?;
        if len == 0 {
            return Storage::new(std::ptr::null_mut(), 0, device, Owner::Host(None));
        }
        match device.kind {
            DeviceKind::Cpu => Storage::allocate_host(device, len, zeroed),
            DeviceKind::Cuda => {
                let scope = cuda::driver()?.enter(device.id)?;
                let ptr = scope.alloc(len)?;
                // Owned from here on: an error below frees it through Drop.
                let storage = Storage::new(
                    std::ptr::without_provenance_mut(ptr as usize),
                    len,
                    device,
                    Owner::CudaDevice,
                )?;
                if zeroed {
                    // SAFETY: the whole new allocation.
                    unsafe { scope.zero(ptr, len) }?;
                    scope.synchronize()?;
                }
                Ok(storage)
            }
            DeviceKind::CudaHost => {
                let base = cuda::driver()?.enter(device.id)?.alloc_pinned(len)?;
                if zeroed {
                    // SAFETY: `len` bytes of new host memory.
                    unsafe { base.write_bytes(0, len) };
                }
                Storage::new(base, len, device, Owner::CudaPinned)
            }
        }
    }

    fn allocate_host(device: Device, len: usize, zeroed: bool) -> Result<Shared<Storage>> {
        let failed = || Error::out_of_memory(format_args!("allocating {len} bytes on {device} failed"));
        if len <= INLINE_MAX_BYTES {
            // Small tensors (most of those Python code makes) take one allocation, not two: the
            // data sits after the storage's record, in the same block.
            let make = |base| Storage::counted(base, len, device, Owner::Inline);
            return Shared::try_new_tailed(len, host_memory::ALIGNMENT, zeroed, make).ok_or_else(failed);
        }
        let Some(block) = host_memory::allocate(len, zeroed) else {
            return Err(failed());
        };
        Storage::new(block.base(), len, device, Owner::Host(Some(block)))
    }

    /// A new shared-memory segment of `len` bytes (always zero-filled: memory files start out
    /// zeroed), for host tensors other processes can map.
    pub fn allocate_shared(len: usize) -> Result<Shared<Storage>> {
        Storage::from_segment(Segment::create(len)?)
    }

    /// The storage of a mapped segment: all of its bytes.
    pub fn from_segment(segment: Segment) -> Result<Shared<Storage>> {
        let (base, len) = (segment.base(), segment.len());
        Storage::new(base, len, Device::CPU, Owner::Shared(segment))
    }

    /// The storage of another process's CUDA allocation, opened here from its IPC handle.
    ///
    /// # Safety
    /// `[base, base + len)` is a mapping from `cuda::Scope::ipc_open` on `device`, which this
    /// storage closes when it goes (also when this call fails).
    pub unsafe fn from_cuda_ipc(base: u64, len: usize, device: Device) -> Result<Shared<Storage>> {
        Storage::new(std::ptr::without_provenance_mut(base as usize), len, device, Owner::CudaIpc)
    }

    /// The shared-memory segment behind this storage, if it is one.
    pub fn segment(&self) -> Option<&Segment> {
        match &self.owner {
            Owner::Shared(segment) => Some(segment),
            _ => None,
        }
    }

    /// Whether this is dlbridge's own CUDA device allocation (one `cuMemAlloc` block, which
    /// the driver can export as an IPC handle).
    pub fn is_own_cuda_allocation(&self) -> bool {
        matches!(self.owner, Owner::CudaDevice)
    }

    /// Takes over memory someone else owns.
    ///
    /// # Safety
    /// `[base, base + len)` must stay valid until the owner releases it (for `Foreign`: until
    /// `release(ctx)` runs; for `Imported`: until the deleter runs).
    /// When the storage's own record cannot be allocated, the owner comes back untouched with
    /// the error: whether lent memory is released on failure is the caller's decision.
    pub unsafe fn borrowed(
        base: *mut u8,
        len: usize,
        device: Device,
        owner: Owner,
    ) -> std::result::Result<Shared<Storage>, (Error, Owner)> {
        Storage::share(Storage::counted(base, len, device, owner))
            .map_err(|(e, storage)| (e, storage.into_owner()))
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }
    /// How many bytes, from `base`, tensors on this storage may reach.
    pub fn byte_len(&self) -> usize {
        self.len
    }
    pub fn device(&self) -> Device {
        self.device
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        match &mut self.owner {
            // Dropping the block (a field) gives it back to the host memory.
            Owner::Host(_) => {}
            // The memory is part of this record, which the last reference frees.
            Owner::Inline => {}
            Owner::Foreign { release, ctx } => {
                if let Some(release) = release.take() {
                    // SAFETY: the lender asked for exactly this call, once, on any thread.
                    unsafe { release(*ctx) }
                }
            }
            // Dropping the deleter (a field) runs the producer's deleter.
            Owner::Imported(_) => {}
            // Errors cannot be reported from here; the memory is lost to this process at worst.
            Owner::CudaDevice => {
                if let Ok(scope) = cuda::driver().and_then(|d| d.enter(self.device.id)) {
                    // SAFETY: allocated by `allocate` on this device; this is its last reference.
                    let _ = unsafe { scope.free(self.base as u64) };
                }
            }
            Owner::CudaPinned => {
                if let Ok(scope) = cuda::driver().and_then(|d| d.enter(self.device.id)) {
                    // SAFETY: as above.
                    let _ = unsafe { scope.free_pinned(self.base) };
                }
            }
            // Dropping the segment (a field) unmaps it and closes the descriptor.
            Owner::Shared(_) => {}
            Owner::CudaIpc => {
                if let Ok(scope) = cuda::driver().and_then(|d| d.enter(self.device.id)) {
                    // SAFETY: opened by `cuda::Scope::ipc_open` on this device; last reference.
                    let _ = unsafe { scope.ipc_close(self.base as u64) };
                }
            }
        }
        count_live(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_zeroed_and_counted() {
        let s = Storage::allocate(Device::CPU, 5000, true).unwrap();
        assert!(matches!(s.owner, Owner::Host(Some(_))));
        assert_eq!(s.base() as usize % host_memory::ALIGNMENT, 0);
        // SAFETY: s is a live host allocation of 5000 bytes, zeroed as asked, so initialised.
        let bytes = unsafe { std::slice::from_raw_parts(s.base(), 5000) };
        assert!(bytes.iter().all(|&b| b == 0));
        drop(s);
        // Small ones live in their storage's record: aligned, zeroed and writable alike.
        for len in [1, 64, INLINE_MAX_BYTES] {
            let s = Storage::allocate(Device::CPU, len, true).unwrap();
            assert!(matches!(s.owner, Owner::Inline));
            assert_eq!(s.base() as usize % host_memory::ALIGNMENT, 0);
            // SAFETY: as above, `len` zeroed bytes.
            let bytes = unsafe { std::slice::from_raw_parts_mut(s.base(), len) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.fill(7);
        }
        let z = Storage::allocate(Device::CPU, 0, false).unwrap();
        assert!(z.base().is_null());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri reports huge allocations as resource exhaustion")]
    fn impossible_allocations_fail_cleanly() {
        let Err(e) = Storage::allocate(Device::CPU, 1 << 46, false) else { panic!("64 TiB allocated") };
        assert_eq!(e.kind, crate::error::ErrorKind::OutOfMemory);
    }
}
