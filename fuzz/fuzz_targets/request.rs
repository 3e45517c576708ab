//! Decode + validate arbitrary bytes for an arbitrary caller (and, with a `P` marker, an arbitrary
//! policy): see `vmpriv_checks::check_request` for the properties. Also: decoding a frame
//! allocates no more bytes than the frame holds (a length prefix cannot make it allocate more).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use vmpriv_protocol::wire::{self, MAX_FRAME, Request};

struct Counting;
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting the bytes asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    vmpriv_checks::check_request(data);
    let before = ALLOCATED.load(Ordering::Relaxed);
    let decoded = wire::decode::<Request>(data);
    let used = ALLOCATED.load(Ordering::Relaxed) - before;
    assert!(used <= data.len().min(MAX_FRAME), "decoding {} bytes allocated {used}", data.len());
    drop(decoded);
});
