//! The global allocator, and how long it keeps memory it no longer uses.
//!
//! Every Rust allocation of the servers, agents and CLI goes through mimalloc: the servers
//! allocate and free many small buffers per request (gRPC frames, JSON values), where
//! glibc's malloc spent 8-20 % of their CPU.
//!
//! mimalloc gives pages that fell empty back to the kernel about a second later (its
//! "purge delay": when it expires, every page empty at that moment goes back). A server
//! under load frees and reallocates hundreds of megabytes a minute, so most of what it
//! gave back it soon faulted in again, and the kernel zeroed every page anew: 16 % of the
//! leader's CPU in the scheduling benchmark (docs/benchmarks.md, "Runs of 2026-12-06
//! (night)"). bosun sets the delay to a minute: empty pages are kept for up to a minute,
//! and go back once a minute. `MIMALLOC_PURGE_DELAY` (milliseconds; -1: never), or any
//! other spelling mimalloc reads, set in the environment wins over this default.
#![allow(unsafe_code)]

use std::os::raw::c_long;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's purge delay, in milliseconds: how long at most it keeps pages that fell
/// empty before it gives them back.
pub const PURGE_DELAY_MS: c_long = 60_000;

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (libmimalloc-sys declares no
/// constant for it). A unit test checks that this option has the purge delay's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes [`PURGE_DELAY_MS`] mimalloc's default purge delay (the environment still wins).
/// Call it first thing in `main`, before any other thread exists.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set_default stores a number in mimalloc's option table, only when
    // the environment did not set the option, and has no other effect. It is not thread
    // safe, and main calls this before it starts any thread.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_number_is_mimallocs_purge_delay() {
        // SAFETY: reads one option; the test harness's threads do not touch mimalloc's
        // options.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc v3's default purge delay (1000 ms) unless the environment set one; its
        // neighbours (eager_commit_delay, use_numa_nodes) default to 1 and 0.
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(v) => assert_eq!(Some(default), v.parse().ok()),
            Err(_) => assert_eq!(default, 1000),
        }
    }
}
