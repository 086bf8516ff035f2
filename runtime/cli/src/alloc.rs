//! The process's allocator: mimalloc, asked for a plain block whenever the
//! layout's alignment is one every block has.
//!
//! The `mimalloc` crate's allocator passed every layout's alignment to
//! `mi_malloc_aligned`, which checks it and the free block's address before
//! it takes the same fast path `mi_malloc` takes at once (docs/benchmarks.md,
//! "mimalloc's plain path"). Almost everything Weir allocates (rows of
//! values, batches, keys) is word-aligned, and every mimalloc block is (its
//! size classes are whole words), so those go the plain way. C code's
//! `malloc` (librdkafka's) reaches the same heap through the library's
//! `override` feature, which `Cargo.toml` enables.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment of every block mimalloc hands out: a machine word.
const BLOCK_ALIGN: usize = std::mem::size_of::<usize>();

/// Whether mimalloc's plain functions serve `layout`: every block they
/// return has its alignment.
#[inline(always)]
fn plain(layout: Layout) -> bool {
    layout.align() <= BLOCK_ALIGN
}

/// A new block for `layout` from `plain_fn` (of its size) when that serves it
/// ([`plain`]), from `aligned_fn` (of its size and alignment) otherwise; null when mimalloc
/// has none, the allocation failure `GlobalAlloc` expects.
///
/// # Safety
///
/// `plain_fn` and `aligned_fn` are mimalloc's functions of those arguments.
#[inline(always)]
unsafe fn block(
    layout: Layout,
    plain_fn: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_fn: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: the caller's: mimalloc's functions take any size and alignment.
    unsafe {
        match plain(layout) {
            true => plain_fn(layout.size()),
            false => aligned_fn(layout.size(), layout.align()),
        }
        .cast()
    }
}

/// mimalloc as the global allocator (see the module's documentation).
pub struct Mimalloc;

// SAFETY: every block comes from mimalloc, from its plain functions only when
// the layout asks for no more than the word alignment every mimalloc block
// has, and from its aligned functions otherwise; each block is freed or
// resized by mimalloc (`mi_free` and `mi_realloc` take blocks of either kind).
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's functions take any size and alignment.
        unsafe { block(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { block(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` is a live block of this allocator, so mimalloc's.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a live block of this allocator allocated with
        // `layout`; the new block keeps the alignment it asks for.
        unsafe {
            match plain(layout) {
                true => mi::mi_realloc(ptr.cast(), new_size),
                false => mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()),
            }
            .cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks come back with the alignment asked for, plain and aligned, of
    /// every small size class and beyond, zeroed or not, and keep it through
    /// growth.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_it_when_resized() {
        for align in [1, 2, 4, 8, 16, 64, 4096] {
            for size in [1, 7, 8, 24, 40, 100, 1000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is freed once, by this allocator.
                unsafe {
                    let p = Mimalloc.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|b| *b == 0));
                    p.write_bytes(0xab, size);
                    let q = Mimalloc.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "resized: size {size}, align {align}");
                    assert!(std::slice::from_raw_parts(q, size).iter().all(|b| *b == 0xab));
                    Mimalloc.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let r = Mimalloc.alloc(layout);
                    assert!(!r.is_null());
                    assert_eq!(r as usize % align, 0, "not zeroed: size {size}, align {align}");
                    Mimalloc.dealloc(r, layout);
                }
            }
        }
    }
}
