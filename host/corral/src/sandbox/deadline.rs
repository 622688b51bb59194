//! The deadline in wall time, including time a guest spends blocked in a WASI call.
//!
//! Epoch interruption stops a guest only while it runs WebAssembly: the check is compiled
//! into loop headers and function entries. A guest that calls `std::thread::sleep` is in
//! the host, inside `wasi:io/poll`, and would hold its call for as long as it asked. So
//! every WASI function that can block — `poll`, `pollable.block`, the `blocking-*`
//! stream methods, the stream drops that wait for a background read or write, and every
//! filesystem call (a read of `/proc/kmsg`, an open of a FIFO in a granted directory) —
//! is linked here in place of wasmtime-wasi's own. Each runs wasmtime-wasi's async
//! implementation (its synchronous bindings do exactly that, through `in_tokio`) under a
//! timeout of what is left of the call's deadline, and a breach traps the guest: the
//! call ends with the deadline limit and the plugin's next call gets a fresh instance.
//!
//! What is left of the deadline is read from [`Ticks`], a counter the host's epoch thread
//! advances with the engine's epoch, so arming a call costs one atomic load, not a clock
//! read (about 30 ns here); the bound has the resolution of the epoch tick, as the epoch
//! deadline has. A WASI call that is ready at once (a write to the captured stdout, a
//! zero timeout) is answered without entering a runtime or arming a timer.
//!
//! A blocked system call cannot be taken back: the read of `/proc/kmsg` goes on in
//! wasmtime-wasi's blocking thread until the kernel answers. The guest's call ends at
//! its deadline; the thread is abandoned (docs/security.md, "What bounds what").

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wasmtime_wasi::p2::{FsError, FsResult, StreamError, StreamResult};

/// The host's epoch clock: ticks counted by the epoch thread alongside the engine's own
/// epoch, which wasmtime does not let a host read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ticks(Arc<AtomicU64>);

impl Ticks {
    /// `ticks` more ticks: called by the epoch thread each time it advances the engines.
    pub fn advance(&self, ticks: u64) {
        self.0.fetch_add(ticks, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// When the call in progress must end, on the host's epoch clock.
#[derive(Debug)]
pub(crate) struct Deadline {
    ticks: Ticks,
    tick: Duration,
    /// The tick at which the call in progress is out of time.
    end: u64,
    /// Set when a WASI call of the call in progress was cut off at the deadline: the
    /// trap that follows is the deadline's.
    pub hit: bool,
}

/// The trap of a WASI call cut off at the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the call's deadline passed while the guest was blocked in a WASI call")]
pub(crate) struct DeadlineExceeded;

/// Runs the futures of blocking WASI calls and their timeouts: one worker, which drives
/// the timers while the calling thread waits.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("corral-wasi")
        .enable_all()
        .build()
        .expect("cannot start the runtime for blocking WASI calls")
});

impl Deadline {
    pub fn new(ticks: Ticks, tick: Duration) -> Deadline {
        Deadline {
            end: ticks.now(),
            ticks,
            tick,
            hit: false,
        }
    }

    /// Starts a call that may take `ticks` ticks from now, as its epoch deadline does.
    pub fn arm(&mut self, ticks: u64) {
        self.end = self.ticks.now().saturating_add(ticks);
        self.hit = false;
    }

    /// What is left of the call's time.
    fn remaining(&self) -> Duration {
        let left = self.end.saturating_sub(self.ticks.now());
        self.tick.saturating_mul(u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// Runs `future` to its end or to the deadline, whichever comes first.
    fn block_on<F: Future>(&mut self, future: F) -> Result<F::Output, DeadlineExceeded> {
        let handle = RUNTIME.handle();
        let mut future = pin!(future);
        {
            // Most calls are ready at once: no timer, no runtime to enter. The future is
            // polled within the runtime's context, since it may make tokio resources.
            let _context = handle.enter();
            if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                return Ok(output);
            }
        }
        let remaining = self.remaining();
        let output = if remaining.is_zero() {
            None
        } else {
            // The timer is made within the runtime, which drives it.
            handle
                .block_on(async { tokio::time::timeout(remaining, future).await })
                .ok()
        };
        self.hit |= output.is_none();
        output.ok_or(DeadlineExceeded)
    }

    pub(super) fn wasi<T>(
        &mut self,
        future: impl Future<Output = wasmtime::Result<T>>,
    ) -> wasmtime::Result<T> {
        self.block_on(future).unwrap_or_else(|e| Err(e.into()))
    }

    pub(super) fn stream<T>(&mut self, future: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
        self.block_on(future)
            .unwrap_or_else(|e| Err(StreamError::Trap(e.into())))
    }

    pub(super) fn fs<T>(&mut self, future: impl Future<Output = FsResult<T>>) -> FsResult<T> {
        self.block_on(future).unwrap_or_else(|e| Err(FsError::trap(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_left_counts_down_with_the_ticks_and_stops_at_zero() {
        let ticks = Ticks::default();
        let mut deadline = Deadline::new(ticks.clone(), Duration::from_millis(5));
        deadline.arm(3);
        assert_eq!(deadline.remaining(), Duration::from_millis(15));
        ticks.advance(1);
        assert_eq!(deadline.remaining(), Duration::from_millis(10));
        ticks.advance(5);
        assert_eq!(deadline.remaining(), Duration::ZERO);
    }

    #[test]
    fn a_ready_future_is_answered_and_a_pending_one_ends_at_the_deadline() {
        let ticks = Ticks::default();
        let mut deadline = Deadline::new(ticks.clone(), Duration::from_millis(20));
        deadline.arm(2);
        assert_eq!(deadline.block_on(async { 7 }).ok(), Some(7));
        assert!(!deadline.hit);
        let started = std::time::Instant::now();
        assert!(deadline.block_on(std::future::pending::<()>()).is_err());
        assert!(deadline.hit);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(40), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
