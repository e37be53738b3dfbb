//! Tensors across processes: shared-memory tensors on the host, and the handles that carry a
//! tensor (host memory in a segment, or dlbridge's own CUDA memory) into another process as a
//! zero-copy tensor there.
//!
//! The memory lives while any process maps it: each process's tensors hold one storage, which
//! keeps one mapping (and, for host memory, one descriptor) open.

use std::os::fd::BorrowedFd;

use crate::cuda;
use crate::device::{Device, DeviceKind};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::shared_memory::{self, CudaIpc, HandleInfo, IPC_HANDLE_SIZE, Segment};
use crate::storage::Storage;
use crate::tensor::Tensor;

/// A new row-major, writable, zero-filled host tensor in a new shared-memory segment.
pub fn zeros_shared(shape: &[i64], dtype: DType) -> Result<Tensor> {
    let layout = Layout::new(shape, None, dtype.itemsize())?;
    let storage = Storage::allocate_shared(layout.numel() * dtype.itemsize())?;
    let base = storage.base();
    Tensor::on_storage(storage, base, shape, None, dtype, false)
}

/// Whether the tensor's memory is a shared-memory segment other processes can map.
pub fn is_shared(t: &Tensor) -> bool {
    t.storage().segment().is_some()
}

/// The tensor itself (an alias) when its memory can already travel to another process (a
/// shared-memory segment, or dlbridge's own CUDA allocation), else a row-major copy of it in a
/// new shared-memory segment. Other device memory (pinned, foreign CUDA memory) is refused.
pub fn share(t: &Tensor) -> Result<Tensor> {
    if is_shared(t) || t.storage().is_own_cuda_allocation() {
        return Ok(t.alias());
    }
    if t.device().kind != DeviceKind::Cpu {
        return Err(Error::unsupported(format_args!(
            "{} memory cannot be shared with other processes: copy it to the CPU (or into a dlbridge \
             CUDA tensor) first",
            t.device()
        )));
    }
    let out = zeros_shared(t.shape(), t.dtype())?;
    let len = out.numel() * t.dtype().itemsize();
    if len == 0 {
        return Ok(out);
    }
    // A strided source is made compact first (the copy kernel's job), then moved in whole.
    let compact = if t.is_contiguous() { t.alias() } else { t.copy()? };
    // SAFETY: both are host tensors of `len` compact bytes; `out` is new memory, so they do not
    // overlap.
    unsafe { std::ptr::copy_nonoverlapping(compact.data_ptr(), out.data_ptr(), len) };
    Ok(out)
}

/// The handle that describes `t` to another process, with the segment's descriptor (borrowed
/// from the tensor's storage) for host memory, or None for CUDA memory (the handle carries the
/// driver's IPC handle).
pub fn to_handle(t: &Tensor) -> Result<([u8; IPC_HANDLE_SIZE], Option<BorrowedFd<'_>>)> {
    let storage = t.storage();
    let base = storage.base() as usize;
    let offset = (t.data_ptr() as usize).wrapping_sub(base);
    let (cuda, fd) = if let Some(segment) = storage.segment() {
        (None, Some(segment.fd()))
    } else if storage.is_own_cuda_allocation() {
        let scope = cuda::driver()?.enter(t.device().id)?;
        let handle = scope.ipc_get(base as u64)?;
        (Some(CudaIpc { device_id: t.device().id, handle: handle.0 }), None)
    } else {
        return Err(Error::unsupported(format_args!(
            "this tensor's memory ({}) cannot be handed to another process: only shared-memory \
             tensors (share it first) and dlbridge's own CUDA tensors can",
            if t.device().kind == DeviceKind::Cpu {
                "private host memory".to_string()
            } else {
                t.device().to_string()
            }
        )));
    };
    let info = HandleInfo {
        cuda,
        dtype: t.dtype(),
        shape: t.shape().to_vec(),
        strides: t.strides().to_vec(),
        byte_offset: offset as u64,
        segment_len: storage.byte_len() as u64,
        read_only: t.is_read_only(),
    };
    Ok((shared_memory::encode(&info)?, fd))
}

/// The tensor a handle describes, on this process's own mapping of the same memory (zero-copy).
/// Host handles need the segment's descriptor `fd` (borrowed: a duplicate is kept), CUDA handles
/// none. Everything the handle says is checked against the segment itself (its size from the
/// descriptor, the allocation's size from the driver) before any memory is reached.
pub fn from_handle(bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<Tensor> {
    let info = shared_memory::decode(bytes)?;
    let storage = match (&info.cuda, fd) {
        (None, Some(fd)) => Storage::from_segment(Segment::open(fd, info.segment_len)?)?,
        (None, None) => {
            return Err(Error::invalid("a host-memory handle needs its segment's file descriptor"));
        }
        (Some(c), _) => {
            let device = Device::cuda(c.device_id);
            if c.device_id < 0 {
                return Err(Error::invalid(format_args!("the handle names CUDA device {}", c.device_id)));
            }
            let scope = cuda::driver()?.enter(device.id)?;
            let (ptr, len) = scope.ipc_open(cuda::IpcMemHandle(c.handle))?;
            // SAFETY: a mapping just opened on this device, of the size the driver reports.
            unsafe { Storage::from_cuda_ipc(ptr, len, device) }?
        }
    };
    let offset =
        usize::try_from(info.byte_offset).ok().filter(|&o| o <= storage.byte_len()).ok_or_else(|| {
            Error::invalid(format_args!(
                "the handle's byte offset {} lies outside the {}-byte segment",
                info.byte_offset,
                storage.byte_len()
            ))
        })?;
    let data = storage.base().wrapping_add(offset);
    Tensor::on_storage(storage, data, &info.shape, Some(&info.strides), info.dtype, info.read_only)
        .map_err(|e| Error::invalid(format_args!("the handle does not fit its segment: {}", e.message)))
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::storage::live_allocations;

    #[test]
    fn handles_rebuild_the_same_memory_and_refuse_what_lies_outside() {
        let t = zeros_shared(&[4, 5], DType::F32).unwrap();
        assert!(is_shared(&t) && share(&t).unwrap().shares_memory(&t));
        let v = t.view(&[2, 2], Some(&[5, 2]), 6).unwrap();
        let (h, fd) = to_handle(&v).unwrap();
        let u = from_handle(&h, fd).unwrap();
        assert_eq!((u.shape(), u.strides()), (&[2i64, 2][..], &[5i64, 2][..]));
        // SAFETY: host memory of both tensors, element (0, 1) of the view is element 8 of t.
        unsafe { u.data_ptr().cast::<f32>().add(2).write(3.5) };
        // SAFETY: as above.
        assert_eq!(unsafe { t.data_ptr().cast::<f32>().add(8).read() }, 3.5);
        // A forged offset past the segment, with a valid check sum.
        let mut info = shared_memory::decode(&h).unwrap();
        info.byte_offset = 80;
        let forged = shared_memory::encode(&info).unwrap();
        assert!(from_handle(&forged, to_handle(&t).unwrap().1).is_err());
        info.byte_offset = 0;
        info.shape = vec![100];
        info.strides = vec![1];
        let forged = shared_memory::encode(&info).unwrap();
        assert!(from_handle(&forged, to_handle(&t).unwrap().1).unwrap_err().message.contains("does not fit"));
        // A private tensor has no handle.
        let private = Tensor::zeros(&[3], DType::F32, Device::CPU).unwrap();
        assert!(to_handle(&private).is_err());
        let s = share(&private).unwrap();
        assert!(is_shared(&s) && !s.shares_memory(&private));
        assert!(live_allocations() >= 3);
    }
}
