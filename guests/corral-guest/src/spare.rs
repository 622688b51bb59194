//! The batch list of one `process-batch` call, kept for the next.
//!
//! wasmtime lowers every call's `message-batch` into the guest through `cabi_realloc`,
//! and wit-bindgen hands it to `process_batch` as a `Vec<u8>` freed when the call ends:
//! a `malloc` and a `free` on every call, each under the host's fuel and epoch metering
//! (about 500 instructions of a one-message call, BENCHMARKS.md). Instead, [`keep`]
//! holds the list past its call, and the `cabi_realloc` that
//! [`export_plugin!`](crate::export_plugin) defines, in place of the standard library's
//! weak one, hands it back when the host next asks for exactly as many bytes. The host
//! makes that the common case: it lays a batch that fits the last one's length out at
//! that length, padded with zeros (`padded_len` in the host's `contract/batch.rs`).
//!
//! Only a block of exactly the asked size and alignment is handed back, so whoever
//! frees it frees it with the layout it was allocated with, whatever the global
//! allocator.

use std::alloc::Layout;
use std::cell::Cell;
use std::ptr::NonNull;

thread_local! {
    /// The kept list and its length (its allocation's size; its alignment is 1).
    static SPARE: Cell<Option<(NonNull<u8>, usize)>> = const { Cell::new(None) };
    /// Whether the host allocates through [`cabi_realloc`] (it does when the plugin was
    /// exported with [`export_plugin!`](crate::export_plugin), not when it defines an
    /// allocator of its own): if not, a kept list would never be handed back.
    static SERVES: Cell<bool> = const { Cell::new(false) };
    /// Whether the last list of bytes the host asked for was handed the kept list.
    static REUSED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the last list of bytes the host asked for (this call's batch, until the call
/// makes a host call that returns a string or a list) was the last call's list handed
/// back: for the tests (`guests/batch-probe`), which check that the host's padding and
/// this module meet.
pub fn reused() -> bool {
    REUSED.get()
}

/// Keeps `list`, the batch the call was handed, for the next call to be handed; frees
/// the list kept before, if the last call was not handed it.
pub(crate) fn keep(list: Vec<u8>) {
    if !SERVES.get() {
        return;
    }
    // A list lowered by the host was allocated for exactly its length: wit-bindgen
    // makes the `Vec` with its length as its capacity.
    let mut list = std::mem::ManuallyDrop::new(list);
    let Some(ptr) = NonNull::new(list.as_mut_ptr()).filter(|_| list.capacity() != 0) else {
        return;
    };
    if let Some((old, len)) = SPARE.replace(Some((ptr, list.capacity()))) {
        // SAFETY: `old` was a `Vec<u8>`'s buffer of capacity `len`, and nothing else
        // holds it since `keep` took it.
        drop(unsafe { Vec::from_raw_parts(old.as_ptr(), 0, len) });
    }
}

/// The kept list, if it is `len` bytes long; it is no longer kept.
fn take(len: usize) -> Option<NonNull<u8>> {
    match SPARE.get() {
        Some((ptr, kept)) if kept == len => {
            SPARE.set(None);
            Some(ptr)
        }
        _ => None,
    }
}

/// The canonical ABI's allocator as [`export_plugin!`](crate::export_plugin) defines it:
/// the standard library's (whose definition is weak, so that one such as this takes its
/// place), except that a request for a list of bytes as long as the kept batch is
/// handed the kept batch.
///
/// # Safety
///
/// As for the standard library's `cabi_realloc`: called by the host with a block this
/// function returned (and its size and alignment), or with none.
#[doc(hidden)]
pub unsafe fn cabi_realloc(old_ptr: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    if old_len == 0 && align == 1 {
        SERVES.set(true);
        let kept = take(new_len);
        REUSED.set(kept.is_some());
        if let Some(ptr) = kept {
            return ptr.as_ptr();
        }
    }
    let layout;
    // SAFETY: as the standard library's: the host passes a power-of-two alignment, and
    // `old_ptr`, `old_len` and `align` describe a block this function returned.
    let ptr = unsafe {
        if old_len == 0 {
            if new_len == 0 {
                return std::ptr::without_provenance_mut(align);
            }
            layout = Layout::from_size_align_unchecked(new_len, align);
            std::alloc::alloc(layout)
        } else {
            layout = Layout::from_size_align_unchecked(old_len, align);
            std::alloc::realloc(old_ptr, layout, new_len)
        }
    };
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    ptr
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list of `len` bytes as the host lowers one: allocated through `cabi_realloc`,
    /// then made a `Vec` of its length, as wit-bindgen does.
    fn lowered(len: usize) -> Vec<u8> {
        // SAFETY: a fresh block of `len` bytes, alignment 1, all of it then written.
        unsafe {
            let ptr = cabi_realloc(std::ptr::null_mut(), 0, 1, len);
            ptr.write_bytes(7, len);
            Vec::from_raw_parts(ptr, len, len)
        }
    }

    #[test]
    fn a_kept_list_is_handed_back_for_its_exact_length_only() {
        let first = lowered(100);
        assert!(!reused(), "nothing was kept yet");
        let at = first.as_ptr();
        keep(first);

        let shorter = lowered(99);
        assert!(!reused());
        assert_ne!(shorter.as_ptr(), at);
        // Two-byte alignment (a `list<u16>`): not the kept list either, however long.
        // SAFETY: a fresh block, freed with its own layout.
        unsafe {
            let wide = cabi_realloc(std::ptr::null_mut(), 0, 2, 100);
            assert_ne!(wide.cast_const(), at);
            std::alloc::dealloc(wide, Layout::from_size_align(100, 2).unwrap());
        }
        drop(shorter);

        let again = lowered(100);
        assert!(reused());
        assert_eq!(again.as_ptr(), at, "the kept list, handed back");
        keep(again);
        let taken = take(100);
        assert_eq!(taken.map(NonNull::as_ptr).map(|p| p.cast_const()), Some(at));
        free(taken, 100);

        // Keeping a list frees the one kept before it.
        keep(lowered(200));
        keep(lowered(300));
        assert_eq!(take(200), None);
        let taken = take(300);
        assert!(taken.is_some());
        free(taken, 300);
    }

    /// Frees a list of `len` bytes that [`take`] handed back.
    fn free(list: Option<NonNull<u8>>, len: usize) {
        if let Some(ptr) = list {
            // SAFETY: a kept list is a `Vec<u8>`'s buffer of capacity `len`, held by
            // nothing else once taken.
            drop(unsafe { Vec::from_raw_parts(ptr.as_ptr(), 0, len) });
        }
    }

    #[test]
    fn nothing_is_kept_unless_the_host_allocates_through_the_sdk() {
        // A plugin with an allocator of its own never calls this crate's: a kept list
        // would never be handed back.
        keep(vec![1; 10]);
        assert_eq!(take(10), None);
    }
}
