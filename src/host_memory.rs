//! dlbridge's own host memory: 256-byte aligned blocks from the global allocator, with a small
//! cache of freed large blocks.
//!
//! Why a cache: a copy into a new tensor writes memory the kernel has to fault in first unless
//! the allocator hands back pages it has used before. glibc does that for a plain `malloc` only
//! when its heap has a hole of the right size, and other libraries' allocations in the same
//! process decide that (measured here: with PyTorch's aligned allocations between them, every
//! 16 MiB dlbridge copy faulted 519 times while NumPy's reused block faulted none, and the copy
//! ran at a tenth of the speed). So the last few freed blocks from 1 MiB to 32 MiB are kept, up
//! to 64 MiB in all (`DLBRIDGE_HOST_CACHE_BYTES` changes the total; 0 turns the cache off), and
//! a request they can serve takes one instead of calling the allocator. Larger blocks go back to
//! the system at once (glibc maps and unmaps those for everyone, NumPy included). Zeroed requests
//! never take a cached block: fresh zero pages are cheaper than clearing used ones.

use std::alloc::Layout;
use std::sync::{Mutex, OnceLock};

/// Alignment of every allocation dlbridge makes (DLPack's recommendation; also what JAX needs to
/// share instead of copy, and what CUDA gives).
pub const ALIGNMENT: usize = 256;

/// Blocks from this size up are cached when freed...
const CACHE_MIN_BLOCK: usize = 1 << 20;
/// ...up to this size.
const CACHE_MAX_BLOCK: usize = 32 << 20;
/// The default total of the cache.
const CACHE_DEFAULT_TOTAL: usize = 64 << 20;
/// At most this many blocks are kept.
const CACHE_SLOTS: usize = 4;

/// A block from the global allocator, with at least `len` bytes from its first 256-byte aligned
/// address. Dropping it gives it back (to the cache or to the allocator).
pub struct HostBlock(RawBlock);

/// The allocation itself, as the cache keeps it: a pointer and the layout it was allocated with.
struct RawBlock {
    block: *mut u8,
    layout: Layout,
}

// SAFETY: a block is plain memory owned by whoever holds it (the HostBlock or the cache).
unsafe impl Send for RawBlock {}

impl RawBlock {
    /// How many bytes the block holds from its first 256-byte aligned address.
    fn capacity(&self) -> usize {
        self.layout.size() - self.block.align_offset(ALIGNMENT)
    }
}

impl HostBlock {
    /// The first 256-byte aligned byte of the block.
    pub fn base(&self) -> *mut u8 {
        self.0.block.wrapping_add(self.0.block.align_offset(ALIGNMENT))
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl Drop for HostBlock {
    fn drop(&mut self) {
        release(RawBlock { block: self.0.block, layout: self.0.layout });
    }
}

struct Cache {
    blocks: [Option<RawBlock>; CACHE_SLOTS],
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache { blocks: [None, None, None, None], bytes: 0 });

fn cache_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("DLBRIDGE_HOST_CACHE_BYTES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(CACHE_DEFAULT_TOTAL)
    })
}

fn cacheable(len: usize) -> bool {
    (CACHE_MIN_BLOCK..=CACHE_MAX_BLOCK).contains(&len) && !cfg!(miri)
}

/// At least `len` (> 0) bytes at a 256-byte aligned address, zeroed if asked; None when the
/// allocator refuses (or `len` is past any allocation).
pub fn allocate(len: usize, zeroed: bool) -> Option<HostBlock> {
    if !zeroed
        && cacheable(len)
        && let Some(block) = take_cached(len)
    {
        return Some(HostBlock(block));
    }
    // A plain malloc (alignment 16) of 255 bytes more, aligned to 256 inside the block. glibc's
    // aligned allocations (posix_memalign, which Rust uses above 16) split a leftover off each
    // chunk that is never merged back, so a freed block could not serve the next request of its
    // size and the heap grew by one block per copy.
    let layout = Layout::from_size_align(len.checked_add(ALIGNMENT - 1)?, 16).ok()?;
    // SAFETY: the layout has a non-zero size.
    let block = unsafe { if zeroed { std::alloc::alloc_zeroed(layout) } else { std::alloc::alloc(layout) } };
    if block.is_null() {
        return None;
    }
    let block = HostBlock(RawBlock { block, layout });
    advise_huge_pages(block.base(), len);
    Some(block)
}

/// The smallest cached block that holds `len` bytes without wasting more than half of itself.
fn take_cached(len: usize) -> Option<RawBlock> {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let fits = |b: &RawBlock| b.capacity() >= len && b.capacity() / 2 <= len;
    let slot = cache
        .blocks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.as_ref().filter(|b| fits(b)).map(|b| (i, b.capacity())))
        .min_by_key(|&(_, size)| size)?
        .0;
    let block = cache.blocks[slot].take()?;
    cache.bytes -= block.layout.size();
    Some(block)
}

/// Gives a block back: into the cache when it is of a cached size and there is room, else to
/// the allocator.
fn release(block: RawBlock) {
    let size = block.layout.size();
    if cacheable(size) {
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let room = cache.bytes + size <= cache_limit();
        if room && let Some(slot) = cache.blocks.iter_mut().find(|b| b.is_none()) {
            *slot = Some(block);
            cache.bytes += size;
            return;
        }
    }
    // SAFETY: the block came from `alloc`/`alloc_zeroed` with this layout, and is freed once.
    unsafe { std::alloc::dealloc(block.block, block.layout) }
}

/// Asks for transparent huge pages on a large fresh allocation, as NumPy does: the first touch of
/// the memory (every copy into a new tensor) then faults 2 MiB at a time instead of 4 KiB, which
/// on the machines measured here was the difference between 0.7 and 4+ GB/s for a 256 MiB copy.
/// Advice only: failure changes nothing.
fn advise_huge_pages(base: *mut u8, len: usize) {
    // Allocations at least this large ask for huge pages.
    #[cfg(all(target_os = "linux", not(miri)))]
    if len >= 4 << 20 {
        const PAGE: usize = 4096;
        let start = (base as usize).next_multiple_of(PAGE);
        let end = (base as usize + len) & !(PAGE - 1);
        if end > start {
            // SAFETY: the range lies inside an allocation we own; MADV_HUGEPAGE only changes how
            // the kernel backs it, never its contents or validity.
            unsafe {
                libc::madvise(
                    base.wrapping_add(start - base as usize).cast(),
                    end - start,
                    libc::MADV_HUGEPAGE,
                )
            };
        }
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    let _ = (base, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_and_zeroed_when_asked() {
        let large = if cfg!(miri) { 8192 } else { 3 << 20 };
        for len in [1usize, 255, 4096, large] {
            let b = allocate(len, true).unwrap();
            assert_eq!(b.base() as usize % ALIGNMENT, 0);
            assert!(b.capacity() >= len);
            // SAFETY: b is a live block of at least len bytes, zeroed as asked, so initialised.
            let bytes = unsafe { std::slice::from_raw_parts(b.base(), len) };
            assert!(bytes.iter().all(|&x| x == 0));
            drop(b);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "the cache is off under Miri")]
    fn freed_large_blocks_are_reused_for_requests_they_fit() {
        let a = allocate(8 << 20, false).unwrap();
        let base = a.base();
        drop(a);
        // Too small a request for the block (it would waste over half): a new block.
        let small = allocate(1 << 20, false).unwrap();
        assert_ne!(small.base(), base);
        // The same size again: some cached block of that size (another test may have swapped
        // its own in), and never for a zeroed request.
        let again = allocate(8 << 20, false).unwrap();
        assert!(again.capacity() >= 8 << 20);
        let zeroed = allocate(8 << 20, true).unwrap();
        // SAFETY: a live block of at least 8 MiB, zeroed as asked, so initialised.
        let bytes = unsafe { std::slice::from_raw_parts(zeroed.base(), 8 << 20) };
        assert!(bytes.iter().all(|&x| x == 0));
        for b in [small, again, zeroed] {
            drop(b);
        }
        let cache = CACHE.lock().unwrap();
        assert!(cache.bytes <= cache_limit());
        assert_eq!(cache.bytes, cache.blocks.iter().flatten().map(|b| b.layout.size()).sum::<usize>());
    }
}
