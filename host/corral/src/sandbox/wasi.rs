//! WASI 0.2 as wasmtime-wasi links it, with every function that can block replaced by
//! one bounded by the call's deadline (see the `deadline` module for why and how).

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::filesystem::types as async_fs;
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::io::streams as async_streams;
use wasmtime_wasi::p2::bindings::sync::filesystem::types as fs;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynPollable, FsError, FsResult, StreamError, StreamResult};

use super::SandboxState;
use super::deadline::Deadline;

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
