//! Copies between devices: host (CPU or pinned) and CUDA memory, in every direction.
//!
//! [`copy`] allocates the destination itself, always fresh and row-major, so every plan below
//! only has to walk the source's layout. The paths, by direction:
//!
//! - **host → host** (CPU and pinned memory alike): the CPU copy kernel.
//! - **host → CUDA**: a contiguous pinned source is one DMA transfer. Anything else (pageable
//!   memory, or a strided source) is packed by the CPU kernel, chunk by chunk, into two pinned
//!   staging buffers used in turn, each chunk's transfer overlapping the packing of the next.
//! - **CUDA → host**: a contiguous source goes straight into pinned memory, or through the staging
//!   buffers into pageable memory (the transfer of one chunk overlapping the unpacking of the
//!   previous). A strided source whose span is at most twice its data is fetched whole and
//!   compacted by the CPU kernel; a sparser one is first compacted on the device.
//! - **CUDA → CUDA**: a contiguous source is one copy (peer-to-peer across devices). A strided
//!   source is compacted by the driver's 2-D copies: rows are the longest run that is contiguous
//!   in the source (a single element when none is), one axis becomes the 2-D copy's height, and
//!   the remaining axes are a loop of such copies. Correct for every layout (negative and zero
//!   strides included); fast for row-pitched slices; slow for transposes, which would need a
//!   kernel of our own.
//!
//! Every function returns after the copy is complete.

use crate::alloc::Shared;
use crate::copy::copy_strided;
use crate::cuda::{self, MAX_PITCH, Mem, Scope, Staging};
use crate::device::{Device, DeviceKind};
use crate::error::Result;
use crate::layout::{Layout, PerAxis};
use crate::storage::Storage;

/// The source of a copy: a validated layout of `itemsize`-byte elements from `data` on `device`.
/// Only [`copy`] makes one, from what its caller vouched for.
#[derive(Clone, Copy)]
struct Source<'a> {
    data: *mut u8,
    layout: &'a Layout,
    itemsize: usize,
    device: Device,
}

/// A source layout in bytes, with extent-1 axes dropped and axes merged where the source is
/// contiguous across them (the row-major destination always is). At least one axis.
struct Plan {
    shape: PerAxis<usize>,
    strides: PerAxis<isize>,
    itemsize: usize,
}

impl Plan {
    fn of(src: Source<'_>) -> Plan {
        let itemsize = src.itemsize;
        let mut shape = PerAxis::<usize>::new();
        let mut strides = PerAxis::<isize>::new();
        for (&n, &s) in src.layout.shape().iter().zip(src.layout.strides()) {
            if n == 1 {
                continue;
            }
            let (n, s) = (n as usize, s as isize * itemsize as isize);
            match (shape.last_mut(), strides.last_mut()) {
                (Some(pn), Some(ps)) if s.checked_mul(n as isize) == Some(*ps) => {
                    *pn *= n;
                    *ps = s;
                }
                _ => {
                    shape.push(n);
                    strides.push(s);
                }
            }
        }
        if shape.is_empty() {
            shape.push(1);
            strides.push(itemsize as isize);
        }
        Plan { shape, strides, itemsize }
    }

    fn is_contiguous(&self) -> bool {
        self.shape.len() == 1 && self.strides[0] == self.itemsize as isize
    }

    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.itemsize
    }

    /// Row-major byte strides of `shape`.
    fn dense(shape: &[usize], itemsize: usize) -> PerAxis<isize> {
        let mut acc = itemsize as isize;
        let mut out = PerAxis::filled(0, shape.len());
        for (o, &n) in out.iter_mut().zip(shape).rev() {
            *o = acc;
            acc *= n as isize;
        }
        out
    }

    /// Cuts the copy into pieces of at most `cap` destination bytes (more only when a single
    /// element is larger): each piece is a block of consecutive indices along one axis, with
    /// every axis inside it whole, so it is contiguous in the destination. Calls
    /// `f(source byte offset, piece shape, destination byte offset)` in destination order.
    fn for_each_piece(
        &self,
        cap: usize,
        mut f: impl FnMut(isize, &[usize], usize) -> Result<()>,
    ) -> Result<()> {
        // The first axis whose inner block fits.
        let mut inner = self.itemsize;
        let mut axis = self.shape.len() - 1;
        while axis > 0 && inner * self.shape[axis] <= cap {
            inner *= self.shape[axis];
            axis -= 1;
        }
        let rows = (cap / inner).max(1);
        let n = self.shape[axis];
        let outer = &self.shape[..axis];
        let mut piece: PerAxis<usize> = self.shape[axis..].iter().copied().collect();
        let mut index = PerAxis::filled(0usize, outer.len());
        let mut dst = 0usize;
        loop {
            let base: isize = index.iter().zip(&self.strides).map(|(&i, &s)| i as isize * s).sum();
            let mut r = 0;
            while r < n {
                piece[0] = rows.min(n - r);
                f(base + r as isize * self.strides[axis], &piece, dst)?;
                dst += piece[0] * inner;
                r += piece[0];
            }
            if !odometer(&mut index, outer) {
                return Ok(());
            }
        }
    }
}

/// Advances a multi-index over `shape` in row-major order; false after the last one.
fn odometer(index: &mut [usize], shape: &[usize]) -> bool {
    for (i, &n) in index.iter_mut().zip(shape).rev() {
        *i += 1;
        if *i < n {
            return true;
        }
        *i = 0;
    }
    false
}

/// The device address a CUDA tensor's data pointer holds.
fn device_addr(p: *mut u8) -> u64 {
    p as usize as u64
}

fn device_ptr(p: *mut u8) -> Mem {
    Mem::Device(device_addr(p))
}

/// Copies a strided layout (`strides` in bytes) from `src` into the row-major `dst` on the host.
///
/// # Safety
/// Every element of the layout from `src` is readable, `dst` holds the row-major result, and the
/// two do not overlap.
unsafe fn pack(src: *const u8, strides: &[isize], shape: &[usize], itemsize: usize, dst: *mut u8) {
    // SAFETY: per the function contract.
    unsafe { copy_strided(src, strides, dst, &Plan::dense(shape, itemsize), shape, itemsize) }
}

/// Up to this many bytes, a contiguous copy between host memories is one `memcpy`, decided before
/// the planner runs: its set-up (simplifying the layout, choosing a kernel) costs more than
/// moving a few hundred bytes. Larger copies go through it, where that set-up is nothing next to
/// the data and the kernels choose streaming stores or threads. Casts use the same bound.
pub(crate) const SMALL_COPY_BYTES: usize = 1 << 20;

/// Copies every element of a layout into new row-major memory on `to`: the returned storage
/// holds `layout.numel() * itemsize` bytes (none when there are no elements).
///
/// # Safety
/// Every element `layout` describes from `data` is `itemsize` bytes of memory on `from` (device
/// memory of that CUDA device, or host memory) that stays readable until this returns.
pub unsafe fn copy(
    data: *mut u8,
    layout: &Layout,
    itemsize: usize,
    from: Device,
    to: Device,
) -> Result<Shared<Storage>> {
    let out = Storage::allocate(to, layout.numel() * itemsize, false)?;
    if layout.numel() == 0 {
        return Ok(out);
    }
    let src = Source { data, layout, itemsize, device: from };
    let dst = out.base();
    match (from.is_host_accessible(), to.is_host_accessible()) {
        (true, true) => {
            let bytes = layout.numel() * itemsize;
            if bytes <= SMALL_COPY_BYTES && layout.is_contiguous() {
                // SAFETY: a contiguous layout's `bytes` bytes start at `data` (its first element),
                // which the caller vouches for; the destination is the new allocation of as many
                // bytes, so the two cannot overlap.
                unsafe { std::ptr::copy_nonoverlapping(data, dst, bytes) };
            } else {
                let plan = Plan::of(src);
                // SAFETY: the caller vouches for the source; the destination is the new
                // row-major allocation of the same shape, so the two cannot overlap.
                unsafe { pack(src.data, &plan.strides, &plan.shape, plan.itemsize, dst) };
            }
        }
        (true, false) => upload(src, dst, to)?,
        (false, true) => download(src, dst, to)?,
        (false, false) => between_devices(src, dst, to)?,
    }
    Ok(out)
}

/// Host → CUDA.
fn upload(src: Source<'_>, dst: *mut u8, dst_device: Device) -> Result<()> {
    let scope = cuda::driver()?.enter(dst_device.id)?;
    let plan = Plan::of(src);
    let to = device_ptr(dst);
    if src.device.kind == DeviceKind::CudaHost && plan.is_contiguous() {
        // SAFETY: both ranges hold `bytes` bytes and outlive the synchronisation below.
        let result = unsafe { scope.copy(to, Mem::Host(src.data), plan.bytes()) };
        return finish(&scope, result);
    }
    let staging = Staging::take(&scope)?;
    let mut turn = 0;
    let result = plan.for_each_piece(cuda::staging_bytes(), |src_off, piece, dst_off| {
        let (buffer, event) = (staging.buffer(turn), staging.event(turn));
        turn ^= 1;
        // The buffer's previous transfer must be done before it is packed again.
        scope.wait(event)?;
        // SAFETY: the piece lies inside the validated source; the buffer holds
        // `staging_bytes()` bytes, at least one piece, and no transfer reads it now.
        unsafe {
            let strides = &plan.strides[plan.strides.len() - piece.len()..];
            pack(src.data.wrapping_offset(src_off), strides, piece, plan.itemsize, buffer)
        };
        let len = piece.iter().product::<usize>() * plan.itemsize;
        // SAFETY: the buffer stays untouched until the event below has fired.
        unsafe { scope.copy(to.offset(dst_off), Mem::Host(buffer), len) }?;
        scope.record(event)
    });
    let result = finish(&scope, result);
    drop(staging);
    result
}

/// CUDA → host.
fn download(src: Source<'_>, dst: *mut u8, dst_device: Device) -> Result<()> {
    let scope = cuda::driver()?.enter(src.device.id)?;
    let plan = Plan::of(src);
    let pinned = dst_device.kind == DeviceKind::CudaHost;
    if plan.is_contiguous() {
        return download_bytes(&scope, device_ptr(src.data), dst, plan.bytes(), pinned);
    }
    let span = src.layout.span().expect("a layout with elements has a span");
    let span_len = (span.hi - span.lo) as usize;
    if span_len <= 2 * plan.bytes() {
        // Fetch the whole span, then compact it on the CPU.
        let whole = Storage::allocate(Device::CPU, span_len, false)?;
        let first = device_ptr(src.data.wrapping_offset(span.lo));
        download_bytes(&scope, first, whole.base(), span_len, false)?;
        // SAFETY: `whole` holds the span, so the layout shifted by -lo stays inside it; the
        // destination is a new row-major allocation of the source's shape.
        unsafe {
            pack(whole.base().wrapping_offset(-span.lo), &plan.strides, &plan.shape, plan.itemsize, dst)
        };
        return Ok(());
    }
    let compact = Storage::allocate(src.device, plan.bytes(), false)?;
    compact_on_device(&scope, src, compact.base())?;
    download_bytes(&scope, device_ptr(compact.base()), dst, plan.bytes(), pinned)
}

/// Contiguous device bytes → host bytes: straight into pinned memory, or through the staging
/// buffers into pageable memory, unpacking one chunk while the next one travels.
fn download_bytes(scope: &Scope, from: Mem, to: *mut u8, len: usize, pinned: bool) -> Result<()> {
    if pinned {
        // SAFETY: both ranges hold `len` bytes and outlive the synchronisation.
        let result = unsafe { scope.copy(Mem::Host(to), from, len) };
        return finish(scope, result);
    }
    let staging = Staging::take(scope)?;
    let chunk = cuda::staging_bytes();
    let unpack = |turn: usize, off: usize| -> Result<()> {
        scope.wait(staging.event(turn))?;
        let n = chunk.min(len - off);
        // SAFETY: the event fired, so the buffer holds the chunk's `n` bytes; `to` holds `len`.
        unsafe { std::ptr::copy_nonoverlapping(staging.buffer(turn), to.add(off), n) };
        Ok(())
    };
    let result = (|| {
        let mut previous: Option<(usize, usize)> = None;
        for (i, off) in (0..len).step_by(chunk).enumerate() {
            let turn = i % 2;
            // This buffer's last chunk (two back) was unpacked in the previous round.
            // SAFETY: the buffer holds `chunk` bytes and nothing reads it until the event fires.
            unsafe { scope.copy(Mem::Host(staging.buffer(turn)), from.offset(off), chunk.min(len - off)) }?;
            scope.record(staging.event(turn))?;
            if let Some((turn, off)) = previous {
                unpack(turn, off)?;
            }
            previous = Some((turn, off));
        }
        if let Some((turn, off)) = previous {
            unpack(turn, off)?;
        }
        Ok(())
    })();
    let result = finish(scope, result);
    drop(staging);
    result
}

/// CUDA → CUDA, on one device or across two.
fn between_devices(src: Source<'_>, dst: *mut u8, dst_device: Device) -> Result<()> {
    let (from, to) = (src.device.id, dst_device.id);
    if from == to {
        let scope = cuda::driver()?.enter(to)?;
        return compact_on_device(&scope, src, dst);
    }
    let plan = Plan::of(src);
    let compact;
    let source = if plan.is_contiguous() {
        src.data
    } else {
        compact = Storage::allocate(src.device, plan.bytes(), false)?;
        compact_on_device(&cuda::driver()?.enter(from)?, src, compact.base())?;
        compact.base()
    };
    let scope = cuda::driver()?.enter(to)?;
    let (d, s) = (device_addr(dst), device_addr(source));
    // SAFETY: both ranges hold `bytes` device bytes and outlive the synchronisation.
    let result = unsafe { scope.copy_peer(d, s, from, plan.bytes()) };
    finish(&scope, result)
}

/// Copies `src` into the row-major `dst` (device memory of the source's size), both on the
/// scope's device, with the driver's copies.
fn compact_on_device(scope: &Scope, src: Source<'_>, dst: *mut u8) -> Result<()> {
    let plan = Plan::of(src);
    let (from, to) = (device_ptr(src.data), device_ptr(dst));
    let size = plan.itemsize;
    let dense = Plan::dense(&plan.shape, size);
    let last = plan.shape.len() - 1;
    // Rows: the innermost axis when it is contiguous in the source, else single elements.
    let (width, row_axes) =
        if plan.strides[last] == size as isize { (plan.shape[last] * size, last) } else { (size, last + 1) };
    // Height: the innermost remaining axis whose source pitch the driver accepts.
    let height_axis = (0..row_axes).rev().find(|&a| {
        let pitch = plan.strides[a];
        pitch >= width as isize && pitch as usize <= MAX_PITCH && dense[a] as usize <= MAX_PITCH
    });
    let loop_axes: PerAxis<usize> = (0..row_axes).filter(|&a| Some(a) != height_axis).collect();
    let loop_shape: PerAxis<usize> = loop_axes.iter().map(|&a| plan.shape[a]).collect();
    let mut index = PerAxis::filled(0usize, loop_axes.len());
    let result = (|| loop {
        let mut s_off = 0isize;
        let mut d_off = 0isize;
        for (&i, &a) in index.iter().zip(&loop_axes) {
            s_off += i as isize * plan.strides[a];
            d_off += i as isize * dense[a];
        }
        let (s, d) = (from.offset_signed(s_off), to.offset(d_off as usize));
        // SAFETY: every row lies inside the validated source and the new destination, which
        // outlive the synchronisation in `finish`.
        unsafe {
            match height_axis {
                Some(a) => {
                    scope.copy_2d(d, dense[a] as usize, s, plan.strides[a] as usize, width, plan.shape[a])?
                }
                None => scope.copy(d, s, width)?,
            }
        }
        if !odometer(&mut index, &loop_shape) {
            return Ok(());
        }
    })();
    finish(scope, result)
}

/// Waits for everything queued, also after a failure (memory that queued work still reads must
/// not be freed or reused before it is done); the first error wins.
fn finish(scope: &Scope, result: Result<()>) -> Result<()> {
    let synchronized = scope.synchronize();
    result.and(synchronized)
}
