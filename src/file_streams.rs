//! Inline file streams for components: wasmtime-wasi's preview2 `read-via-stream`,
//! `write-via-stream` and `append-via-stream` do each non-blocking read and write on Tokio's
//! blocking pool (`spawn_blocking`), which starts a thread — forbidden in a sandbox (its
//! seccomp filter refuses it, so a component writing a file would end `sandbox_violation`).
//! `allow_blocking_current_thread` covers preview1 and preview2's other file calls, not these
//! streams. So the component linker's three functions are shadowed here by ones that return
//! streams doing the I/O on the calling thread, as preview1 does with the same setting: a
//! regular file in a granted directory never blocks for long. They also charge bytes written
//! to the task's write budget ([`WriteBudget`](crate::budget::WriteBudget)), and so does the
//! shadowed `descriptor.write`.
//!
//! Permission checks are wasmtime-wasi's own: the descriptor's `FsPerms` (a `--dir-ro` grant
//! refuses writes) and the mode it was opened with (the kernel refuses the rest).

use crate::budget::WriteLimitExceeded;
use crate::template::TaskState;
use bytes::{Bytes, BytesMut};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamError, StreamResult,
};

/// The preview2 filesystem interface as wasmtime-wasi 48 defines it in its linker.
pub(crate) const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";
/// Most bytes one stream read returns or one stream write accepts.
const MAX_CHUNK: usize = 1 << 20;

/// Bytes a component task has written to files and may still write: shared by the task's
/// streams and its store (a stream is a resource in the table, without access to the store).
#[derive(Debug, Default)]
pub(crate) struct SharedWrites {
    pub max_bytes: Option<u64>,
    pub bytes: u64,
}

/// The task's shared write counter.
pub(crate) type Writes = Arc<Mutex<SharedWrites>>;

/// Charges `n` bytes, or refuses them all when they would pass the budget.
fn charge(writes: &Writes, n: u64) -> Result<(), WriteLimitExceeded> {
    let mut w = writes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(limit) = w.max_bytes
        && w.bytes.saturating_add(n) > limit
    {
        return Err(WriteLimitExceeded::Bytes { limit, written: w.bytes, asked: n });
    }
    w.bytes = w.bytes.saturating_add(n);
    Ok(())
}

/// Gives back bytes charged for a write that wrote fewer.
fn refund(writes: &Writes, n: u64) {
    let mut w = writes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    w.bytes = w.bytes.saturating_sub(n);
}

struct InlineInput {
    file: Arc<std::fs::File>,
    position: u64,
}

#[wasmtime_wasi::async_trait]
impl Pollable for InlineInput {
    async fn ready(&mut self) {}
}

impl InputStream for InlineInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = BytesMut::zeroed(size.min(MAX_CHUNK));
        loop {
            match self.file.read_at(&mut buf, self.position) {
                Ok(0) => return Err(StreamError::Closed),
                Ok(n) => {
                    buf.truncate(n);
                    self.position += n as u64;
                    return Ok(buf.freeze());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StreamError::LastOperationFailed(e.into())),
            }
        }
    }
}

enum Mode {
    At(u64),
    Append,
}

struct InlineOutput {
    file: Arc<std::fs::File>,
    mode: Mode,
    writes: Writes,
}

#[wasmtime_wasi::async_trait]
impl Pollable for InlineOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for InlineOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let n = bytes.len() as u64;
        charge(&self.writes, n).map_err(|e| StreamError::Trap(e.into()))?;
        let at = match self.mode {
            Mode::At(p) => p,
            Mode::Append => match self.file.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    refund(&self.writes, n);
                    return Err(StreamError::LastOperationFailed(e.into()));
                }
            },
        };
        match self.file.write_all_at(&bytes, at) {
            Ok(()) => {
                if let Mode::At(p) = &mut self.mode {
                    *p += n;
                }
                Ok(())
            }
            Err(e) => {
                refund(&self.writes, n);
                Err(StreamError::LastOperationFailed(e.into()))
            }
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_CHUNK)
    }
}

type Store<'a> = StoreContextMut<'a, TaskState>;

/// The open file behind `fd`, or the error-code preview2 gives (a directory is `is-directory`
/// for a read and `bad-descriptor` for a write, as in wasmtime-wasi).
fn file_of(
    store: &mut Store<'_>,
    fd: &Resource<Descriptor>,
    write: bool,
) -> wasmtime::Result<Result<Arc<std::fs::File>, ErrorCode>> {
    let table = wasmtime_wasi::WasiView::ctx(store.data_mut()).table;
    Ok(match table.get(fd)? {
        Descriptor::File(f) if write && f.perms.write_not_permitted() => {
            Err(ErrorCode::NotPermitted)
        }
        Descriptor::File(f) => Ok(Arc::clone(&f.file)),
        Descriptor::Dir(_) if write => Err(ErrorCode::BadDescriptor),
        Descriptor::Dir(_) => Err(ErrorCode::IsDirectory),
    })
}

fn push<T: Send + 'static>(store: &mut Store<'_>, stream: T) -> wasmtime::Result<Resource<T>> {
    let table = wasmtime_wasi::WasiView::ctx(store.data_mut()).table;
    Ok(table.push(stream)?)
}

/// Shadows the three stream constructors and `descriptor.write` in a linker that already
/// has WASI preview2.
pub(crate) fn add_to_linker(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap(
        "[method]descriptor.read-via-stream",
        |mut store: Store<'_>, (fd, offset): (Resource<Descriptor>, u64)| {
            let file = match file_of(&mut store, &fd, false)? {
                Ok(f) => f,
                Err(e) => return Ok((Err(e),)),
            };
            let stream: DynInputStream = Box::new(InlineInput { file, position: offset });
            Ok((Ok(push(&mut store, stream)?),))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: Store<'_>, (fd, offset): (Resource<Descriptor>, u64)| {
            let file = match file_of(&mut store, &fd, true)? {
                Ok(f) => f,
                Err(e) => return Ok((Err(e),)),
            };
            let writes = Arc::clone(&store.data().file_writes);
            let stream: DynOutputStream =
                Box::new(InlineOutput { file, mode: Mode::At(offset), writes });
            Ok((Ok(push(&mut store, stream)?),))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: Store<'_>, (fd,): (Resource<Descriptor>,)| {
            let file = match file_of(&mut store, &fd, true)? {
                Ok(f) => f,
                Err(e) => return Ok((Err(e),)),
            };
            let writes = Arc::clone(&store.data().file_writes);
            let stream: DynOutputStream =
                Box::new(InlineOutput { file, mode: Mode::Append, writes });
            Ok((Ok(push(&mut store, stream)?),))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write",
        |mut store: Store<'_>, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            let file = match file_of(&mut store, &fd, true)? {
                Ok(f) => f,
                Err(e) => return Ok((Err(e),)),
            };
            let writes = Arc::clone(&store.data().file_writes);
            charge(&writes, buf.len() as u64)?;
            match file.write_at(&buf, offset) {
                Ok(n) => {
                    refund(&writes, (buf.len() - n) as u64);
                    Ok((Ok(n as u64),))
                }
                Err(e) => {
                    refund(&writes, buf.len() as u64);
                    Ok((Err(error_code(&e)),))
                }
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The preview2 error code for an I/O error of a write.
fn error_code(e: &std::io::Error) -> ErrorCode {
    match e.raw_os_error() {
        Some(libc::EFBIG) => ErrorCode::FileTooLarge,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorCode::InsufficientSpace,
        Some(libc::EBADF) => ErrorCode::BadDescriptor,
        Some(libc::EPERM) | Some(libc::EACCES) => ErrorCode::NotPermitted,
        Some(libc::EINVAL) => ErrorCode::Invalid,
        Some(libc::EISDIR) => ErrorCode::IsDirectory,
        _ => ErrorCode::Io,
    }
}
