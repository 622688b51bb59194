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

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::filesystem::types as async_fs;
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::io::streams as async_streams;
use wasmtime_wasi::p2::bindings::sync::filesystem::types as fs;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynPollable, FsError, FsResult, StreamError, StreamResult};

use crate::sandbox::SandboxState;

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

    fn wasi<T>(&mut self, future: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
        self.block_on(future).unwrap_or_else(|e| Err(e.into()))
    }

    fn stream<T>(&mut self, future: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
        self.block_on(future)
            .unwrap_or_else(|e| Err(StreamError::Trap(e.into())))
    }

    fn fs<T>(&mut self, future: impl Future<Output = FsResult<T>>) -> FsResult<T> {
        self.block_on(future).unwrap_or_else(|e| Err(FsError::trap(e)))
    }
}

/// Links WASI 0.2 as wasmtime-wasi does, with its blocking functions replaced by ones
/// bounded by the call's deadline.
pub(crate) fn add_wasi_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    poll::add_to_linker::<_, Io>(linker, BoundedIo::of)?;
    streams::add_to_linker::<_, Io>(linker, BoundedIo::of)?;
    fs::add_to_linker::<_, Fs>(linker, BoundedFs::of)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `wasi:io` with the call's deadline.
pub(crate) struct BoundedIo<'a> {
    table: &'a mut ResourceTable,
    deadline: &'a mut Deadline,
}

/// What `wasi:io` is linked with.
struct Io;

impl HasData for Io {
    type Data<'a> = BoundedIo<'a>;
}

impl BoundedIo<'_> {
    fn of(state: &mut SandboxState) -> BoundedIo<'_> {
        let (_, table, deadline) = state.bounded();
        BoundedIo { table, deadline }
    }
}

/// `wasi:filesystem/types` with the call's deadline.
pub(crate) struct BoundedFs<'a> {
    view: WasiFilesystemCtxView<'a>,
    deadline: &'a mut Deadline,
}

/// What `wasi:filesystem/types` is linked with.
struct Fs;

impl HasData for Fs {
    type Data<'a> = BoundedFs<'a>;
}

impl BoundedFs<'_> {
    fn of(state: &mut SandboxState) -> BoundedFs<'_> {
        let (wasi, table, deadline) = state.bounded();
        BoundedFs {
            view: WasiFilesystemCtxView {
                ctx: wasi.filesystem(),
                table,
            },
            deadline,
        }
    }
}

type Pollable = Resource<DynPollable>;

impl poll::Host for BoundedIo<'_> {
    fn poll(&mut self, pollables: Vec<Pollable>) -> wasmtime::Result<Vec<u32>> {
        let table = &mut *self.table;
        self.deadline.wasi(async_poll::Host::poll(table, pollables))
    }
}

impl poll::HostPollable for BoundedIo<'_> {
    fn ready(&mut self, pollable: Pollable) -> wasmtime::Result<bool> {
        let table = &mut *self.table;
        self.deadline
            .wasi(async_poll::HostPollable::ready(table, pollable))
    }

    fn block(&mut self, pollable: Pollable) -> wasmtime::Result<()> {
        let table = &mut *self.table;
        self.deadline
            .wasi(async_poll::HostPollable::block(table, pollable))
    }

    fn drop(&mut self, pollable: Pollable) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

type Input = Resource<streams::InputStream>;
type Output = Resource<streams::OutputStream>;

impl streams::Host for BoundedIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(&mut *self.table, err)
    }
}

impl streams::HostOutputStream for BoundedIo<'_> {
    fn drop(&mut self, stream: Output) -> wasmtime::Result<()> {
        // Waits for a write still running in the background.
        let table = &mut *self.table;
        self.deadline
            .wasi(async_streams::HostOutputStream::drop(table, stream))
    }

    fn check_write(&mut self, stream: Output) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(&mut *self.table, stream)
    }

    fn write(&mut self, stream: Output, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(&mut *self.table, stream, bytes)
    }

    fn blocking_write_and_flush(&mut self, stream: Output, bytes: Vec<u8>) -> StreamResult<()> {
        let table = &mut *self.table;
        self.deadline
            .stream(async_streams::HostOutputStream::blocking_write_and_flush(
                table, stream, bytes,
            ))
    }

    fn blocking_write_zeroes_and_flush(&mut self, stream: Output, len: u64) -> StreamResult<()> {
        let table = &mut *self.table;
        self.deadline
            .stream(async_streams::HostOutputStream::blocking_write_zeroes_and_flush(
                table, stream, len,
            ))
    }

    fn subscribe(&mut self, stream: Output) -> wasmtime::Result<Pollable> {
        streams::HostOutputStream::subscribe(&mut *self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Output, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(&mut *self.table, stream, len)
    }

    fn flush(&mut self, stream: Output) -> StreamResult<()> {
        streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Output) -> StreamResult<()> {
        let table = &mut *self.table;
        self.deadline
            .stream(async_streams::HostOutputStream::blocking_flush(table, stream))
    }

    fn splice(&mut self, dst: Output, src: Input, len: u64) -> StreamResult<u64> {
        streams::HostOutputStream::splice(&mut *self.table, dst, src, len)
    }

    fn blocking_splice(&mut self, dst: Output, src: Input, len: u64) -> StreamResult<u64> {
        let table = &mut *self.table;
        self.deadline
            .stream(async_streams::HostOutputStream::blocking_splice(
                table, dst, src, len,
            ))
    }
}

impl streams::HostInputStream for BoundedIo<'_> {
    fn drop(&mut self, stream: Input) -> wasmtime::Result<()> {
        // Waits for a read still running in the background.
        let table = &mut *self.table;
        self.deadline
            .wasi(async_streams::HostInputStream::drop(table, stream))
    }

    fn read(&mut self, stream: Input, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(&mut *self.table, stream, len)
    }

    fn blocking_read(&mut self, stream: Input, len: u64) -> StreamResult<Vec<u8>> {
        let table = &mut *self.table;
        self.deadline
            .stream(async_streams::HostInputStream::blocking_read(table, stream, len))
    }

    fn skip(&mut self, stream: Input, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(&mut *self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Input, len: u64) -> StreamResult<u64> {
        let table = &mut *self.table;
        self.deadline
            .stream(async_streams::HostInputStream::blocking_skip(table, stream, len))
    }

    fn subscribe(&mut self, stream: Input) -> wasmtime::Result<Pollable> {
        streams::HostInputStream::subscribe(&mut *self.table, stream)
    }
}

type Descriptor = Resource<fs::Descriptor>;

impl fs::Host for BoundedFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<fs::ErrorCode> {
        fs::Host::convert_error_code(&mut self.view, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<streams::Error>,
    ) -> wasmtime::Result<Option<fs::ErrorCode>> {
        fs::Host::filesystem_error_code(&mut self.view, err)
    }
}

/// Each filesystem call as wasmtime-wasi's synchronous bindings make it
/// (`p2/host/filesystem/sync.rs`), bounded by the deadline instead of `in_tokio`.
macro_rules! bounded_fs {
    ($self:ident, $method:ident($($arg:expr),*)) => {{
        let BoundedFs { view, deadline } = $self;
        deadline.fs(async_fs::HostDescriptor::$method(view, $($arg),*))
    }};
}

impl fs::HostDescriptor for BoundedFs<'_> {
    fn advise(&mut self, fd: Descriptor, offset: u64, len: u64, advice: fs::Advice) -> FsResult<()> {
        bounded_fs!(self, advise(fd, offset, len, advice.into()))
    }

    fn sync_data(&mut self, fd: Descriptor) -> FsResult<()> {
        bounded_fs!(self, sync_data(fd))
    }

    fn get_flags(&mut self, fd: Descriptor) -> FsResult<fs::DescriptorFlags> {
        bounded_fs!(self, get_flags(fd)).map(Into::into)
    }

    fn get_type(&mut self, fd: Descriptor) -> FsResult<fs::DescriptorType> {
        bounded_fs!(self, get_type(fd)).map(Into::into)
    }

    fn set_size(&mut self, fd: Descriptor, size: u64) -> FsResult<()> {
        bounded_fs!(self, set_size(fd, size))
    }

    fn set_times(&mut self, fd: Descriptor, atim: fs::NewTimestamp, mtim: fs::NewTimestamp) -> FsResult<()> {
        bounded_fs!(self, set_times(fd, atim.into(), mtim.into()))
    }

    fn read(&mut self, fd: Descriptor, len: u64, offset: u64) -> FsResult<(Vec<u8>, bool)> {
        bounded_fs!(self, read(fd, len, offset))
    }

    fn write(&mut self, fd: Descriptor, buf: Vec<u8>, offset: u64) -> FsResult<u64> {
        bounded_fs!(self, write(fd, buf, offset))
    }

    fn read_directory(&mut self, fd: Descriptor) -> FsResult<Resource<fs::DirectoryEntryStream>> {
        bounded_fs!(self, read_directory(fd))
    }

    fn sync(&mut self, fd: Descriptor) -> FsResult<()> {
        bounded_fs!(self, sync(fd))
    }

    fn create_directory_at(&mut self, fd: Descriptor, path: String) -> FsResult<()> {
        bounded_fs!(self, create_directory_at(fd, path))
    }

    fn stat(&mut self, fd: Descriptor) -> FsResult<fs::DescriptorStat> {
        bounded_fs!(self, stat(fd)).map(Into::into)
    }

    fn stat_at(
        &mut self,
        fd: Descriptor,
        flags: fs::PathFlags,
        path: String,
    ) -> FsResult<fs::DescriptorStat> {
        bounded_fs!(self, stat_at(fd, flags.into(), path)).map(Into::into)
    }

    fn set_times_at(
        &mut self,
        fd: Descriptor,
        flags: fs::PathFlags,
        path: String,
        atim: fs::NewTimestamp,
        mtim: fs::NewTimestamp,
    ) -> FsResult<()> {
        bounded_fs!(
            self,
            set_times_at(fd, flags.into(), path, atim.into(), mtim.into())
        )
    }

    fn link_at(
        &mut self,
        fd: Descriptor,
        old_flags: fs::PathFlags,
        old_path: String,
        new_fd: Descriptor,
        new_path: String,
    ) -> FsResult<()> {
        bounded_fs!(self, link_at(fd, old_flags.into(), old_path, new_fd, new_path))
    }

    fn open_at(
        &mut self,
        fd: Descriptor,
        flags: fs::PathFlags,
        path: String,
        oflags: fs::OpenFlags,
        dflags: fs::DescriptorFlags,
    ) -> FsResult<Descriptor> {
        bounded_fs!(
            self,
            open_at(fd, flags.into(), path, oflags.into(), dflags.into())
        )
    }

    fn drop(&mut self, fd: Descriptor) -> wasmtime::Result<()> {
        fs::HostDescriptor::drop(&mut self.view, fd)
    }

    fn readlink_at(&mut self, fd: Descriptor, path: String) -> FsResult<String> {
        bounded_fs!(self, readlink_at(fd, path))
    }

    fn remove_directory_at(&mut self, fd: Descriptor, path: String) -> FsResult<()> {
        bounded_fs!(self, remove_directory_at(fd, path))
    }

    fn rename_at(
        &mut self,
        fd: Descriptor,
        old_path: String,
        new_fd: Descriptor,
        new_path: String,
    ) -> FsResult<()> {
        bounded_fs!(self, rename_at(fd, old_path, new_fd, new_path))
    }

    fn symlink_at(&mut self, fd: Descriptor, src: String, dest: String) -> FsResult<()> {
        bounded_fs!(self, symlink_at(fd, src, dest))
    }

    fn unlink_file_at(&mut self, fd: Descriptor, path: String) -> FsResult<()> {
        bounded_fs!(self, unlink_file_at(fd, path))
    }

    fn read_via_stream(&mut self, fd: Descriptor, offset: u64) -> FsResult<Input> {
        fs::HostDescriptor::read_via_stream(&mut self.view, fd, offset)
    }

    fn write_via_stream(&mut self, fd: Descriptor, offset: u64) -> FsResult<Output> {
        fs::HostDescriptor::write_via_stream(&mut self.view, fd, offset)
    }

    fn append_via_stream(&mut self, fd: Descriptor) -> FsResult<Output> {
        fs::HostDescriptor::append_via_stream(&mut self.view, fd)
    }

    fn is_same_object(&mut self, a: Descriptor, b: Descriptor) -> wasmtime::Result<bool> {
        let BoundedFs { view, deadline } = self;
        deadline.wasi(async_fs::HostDescriptor::is_same_object(view, a, b))
    }

    fn metadata_hash(&mut self, fd: Descriptor) -> FsResult<fs::MetadataHashValue> {
        bounded_fs!(self, metadata_hash(fd)).map(Into::into)
    }

    fn metadata_hash_at(
        &mut self,
        fd: Descriptor,
        flags: fs::PathFlags,
        path: String,
    ) -> FsResult<fs::MetadataHashValue> {
        bounded_fs!(self, metadata_hash_at(fd, flags.into(), path)).map(Into::into)
    }
}

impl fs::HostDirectoryEntryStream for BoundedFs<'_> {
    fn read_directory_entry(
        &mut self,
        stream: Resource<fs::DirectoryEntryStream>,
    ) -> FsResult<Option<fs::DirectoryEntry>> {
        let BoundedFs { view, deadline } = self;
        deadline
            .fs(async_fs::HostDirectoryEntryStream::read_directory_entry(
                view, stream,
            ))
            .map(|entry| entry.map(Into::into))
    }

    fn drop(&mut self, stream: Resource<fs::DirectoryEntryStream>) -> wasmtime::Result<()> {
        fs::HostDirectoryEntryStream::drop(&mut self.view, stream)
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
