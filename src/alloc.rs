//! Allocation that can fail. Rust's `Box::new`, `Arc::new`, `Vec::push` and `format!` abort the
//! process when memory runs out; a library under other people's programs must instead report
//! `DLB_ERR_OUT_OF_MEMORY` and keep working. Every heap allocation dlbridge makes outside tests
//! goes through this module (or `Vec::try_reserve*`, or `std::alloc` with a NULL check):
//!
//! - [`try_box`]: a `Box` whose allocation may fail;
//! - [`Shared`]: a reference-counted pointer like `Arc` (clone = one more reference, the value is
//!   dropped with the last one) whose creation may fail.
//!
//! Scratch that would otherwise be a `Vec` lives on the stack (`layout::PerAxis`), and error
//! messages are formatted without aborting (`error::message`).
//!
//! `tests/oom.rs` fails each allocation of each C-API operation in turn and checks that the
//! operation reports it and leaks nothing.

use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering, fence};

/// `Box::new(value)`, or `value` back when the allocation fails.
#[inline]
pub fn try_box<T>(value: T) -> Result<Box<T>, T> {
    let layout = std::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value)); // allocates nothing
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) }.cast::<T>();
    if p.is_null() {
        return Err(value);
    }
    // SAFETY: `p` is a fresh allocation from the global allocator with `T`'s layout, which is
    // what `Box` owns and frees.
    unsafe {
        p.write(value);
        Ok(Box::from_raw(p))
    }
}

/// A shared, immutable value with an atomic reference count, like `Arc<T>`, but created by the
/// fallible [`Shared::try_new`]. Cloning adds a reference; the value is dropped, on whichever
/// thread lets go last, when the last reference goes.
pub struct Shared<T> {
    inner: NonNull<Inner<T>>,
}

struct Inner<T> {
    count: AtomicUsize,
    /// The bytes allocated after this record (see [`Shared::try_new_tailed`]); 0 for a record
    /// allocated on its own.
    extra: usize,
    value: T,
}

// SAFETY: as for `Arc<T>`: shared access hands out `&T` on several threads (needs `Sync`), and the
// last reference drops `T` on whichever thread holds it (needs `Send`).
unsafe impl<T: Send + Sync> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// One reference to `value`, or `value` back when the allocation fails.
    pub fn try_new(value: T) -> Result<Shared<T>, T> {
        match try_box(Inner { count: AtomicUsize::new(1), extra: 0, value }) {
            Ok(inner) => Ok(Shared { inner: NonNull::from(Box::leak(inner)) }),
            Err(inner) => Err(inner.value),
        }
    }

    /// One reference to the value `make` builds from the address of `tail` bytes that live in
    /// the same allocation, after the value, at an address aligned to `align` (a power of two),
    /// zeroed if asked; None when the allocation fails (then `make` is not called). The bytes
    /// live exactly as long as the value: one allocation and one free instead of two, for a
    /// value that owns a small buffer (a small tensor's storage and its data).
    pub fn try_new_tailed(
        tail: usize,
        align: usize,
        zeroed: bool,
        make: impl FnOnce(*mut u8) -> T,
    ) -> Option<Shared<T>> {
        debug_assert!(align.is_power_of_two());
        let head = std::alloc::Layout::new::<Inner<T>>();
        // Room to align the tail wherever the allocator puts the block: no aligned allocation
        // (see host_memory for why glibc's are avoided).
        let extra = tail.checked_add(align - 1)?;
        let layout =
            std::alloc::Layout::from_size_align(head.size().checked_add(extra)?, head.align()).ok()?;
        // SAFETY: the layout has a non-zero size (it holds at least the record).
        let block = unsafe { std::alloc::alloc(layout) };
        if block.is_null() {
            return None;
        }
        let after = block.wrapping_add(head.size());
        let data = after.wrapping_add(after.align_offset(align));
        if zeroed {
            // SAFETY: `data` and the `tail` bytes after it lie inside the new block, past the
            // record (the block has `align - 1` bytes of room for the alignment).
            unsafe { data.write_bytes(0, tail) };
        }
        let inner = block.cast::<Inner<T>>();
        // SAFETY: the block starts with room for the record, aligned for it (the layout's
        // alignment is the record's); `Drop` frees it with the same layout, rebuilt from `extra`.
        unsafe {
            inner.write(Inner { count: AtomicUsize::new(1), extra, value: make(data) });
            Some(Shared { inner: NonNull::new_unchecked(inner) })
        }
    }

    fn inner(&self) -> &Inner<T> {
        // SAFETY: the block lives while any reference (this one included) does.
        unsafe { self.inner.as_ref() }
    }

    /// Whether `a` and `b` are references to the same value.
    pub fn ptr_eq(a: &Shared<T>, b: &Shared<T>) -> bool {
        a.inner == b.inner
    }

    /// How many references there are now (for tests and assertions: another thread may change
    /// it at any moment).
    pub fn count(this: &Shared<T>) -> usize {
        this.inner().count.load(Ordering::Acquire)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        // Relaxed, as in `Arc`: a new reference is made from an existing one, which keeps the
        // value alive; no other memory needs ordering here.
        let before = self.inner().count.fetch_add(1, Ordering::Relaxed);
        if before > isize::MAX as usize {
            // Only reachable by leaking references on purpose (as `Arc` does, refuse to wrap).
            std::process::abort();
        }
        Shared { inner: self.inner }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if self.inner().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other reference's uses happen before the value is dropped (the Release above,
        // on every thread that let go, pairs with this Acquire).
        fence(Ordering::Acquire);
        let inner = self.inner.as_ptr();
        let extra = self.inner().extra;
        if extra == 0 {
            // SAFETY: this was the last reference; the block came from `try_box`.
            drop(unsafe { Box::from_raw(inner) });
            return;
        }
        let head = std::alloc::Layout::new::<Inner<T>>();
        // SAFETY: this was the last reference; the block came from `try_new_tailed`, whose
        // layout was this one (it checked that the size fits); the value is dropped once, then
        // the block freed.
        unsafe {
            std::ptr::drop_in_place(inner);
            let layout = std::alloc::Layout::from_size_align_unchecked(head.size() + extra, head.align());
            std::alloc::dealloc(inner.cast(), layout);
        }
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner().value.fmt(f)
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Shared::ptr_eq(self, other) || **self == **other
    }
}

impl<T: Eq> Eq for Shared<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counted<'a>(&'a AtomicUsize);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn boxes_hold_their_value_and_drop_it_once() {
        let drops = AtomicUsize::new(0);
        let b = try_box(Counted(&drops)).ok().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let zst = try_box(()).unwrap();
        drop(zst);
        let big = try_box([7u64; 100]).unwrap();
        assert_eq!(big[99], 7);
    }

    #[test]
    fn shared_values_drop_with_the_last_reference() {
        let drops = AtomicUsize::new(0);
        let a = Shared::try_new(Counted(&drops)).ok().unwrap();
        let b = a.clone();
        assert!(Shared::ptr_eq(&a, &b));
        assert_eq!(Shared::count(&a), 2);
        drop(a);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert_eq!(Shared::count(&b), 1);
        drop(b);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn tailed_values_own_aligned_bytes_and_drop_once() {
        let drops = AtomicUsize::new(0);
        for (len, align, zeroed) in [(0, 1, false), (1, 256, true), (64, 256, true), (4096, 64, false)] {
            let mut tail = std::ptr::null_mut();
            let a = Shared::try_new_tailed(len, align, zeroed, |p| {
                tail = p;
                Counted(&drops)
            })
            .unwrap();
            assert_eq!(tail as usize % align, 0);
            // SAFETY: the tail is `len` bytes of the live block (zeroed when asked).
            let bytes = unsafe { std::slice::from_raw_parts_mut(tail, len) };
            if zeroed {
                assert!(bytes.iter().all(|&b| b == 0));
            }
            bytes.fill(0xa5);
            // A second reference (freed through the atomic decrement), then the last.
            let b = a.clone();
            drop(a);
            assert_eq!((Shared::count(&b), drops.load(Ordering::SeqCst)), (1, 0));
            drop(b);
            assert_eq!(drops.swap(0, Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn shared_references_cross_threads() {
        let drops = AtomicUsize::new(0);
        let shared = Shared::try_new(vec![1u8, 2, 3]).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let mine = shared.clone();
                s.spawn(move || {
                    for _ in 0..50 {
                        let again = mine.clone();
                        assert_eq!(again[2], 3);
                    }
                });
            }
        });
        assert_eq!(Shared::count(&shared), 1);
        let counted = Shared::try_new(Counted(&drops)).ok().unwrap();
        std::thread::scope(|s| {
            let other = counted.clone();
            s.spawn(move || drop(other));
        });
        drop(counted);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}
