//! The per-task write budget, enforced at the WASI layer: bytes written to regular files and
//! files, directories and links created. `RLIMIT_FSIZE` (see [`crate::rlimits`]) bounds each
//! file; this bounds their sum, so a task cannot fill the disk behind a read-write grant.
//!
//! The mechanism: after wasmtime-wasi's preview1 functions are linked, the ones that write or
//! create are shadowed by wrappers here. Each wrapper checks the budget, then calls
//! wasmtime-wasi's own ABI-level function for that import (the one its linker entry calls, so
//! argument decoding, errno mapping and results are exactly wasmtime-wasi's) and charges what
//! was done. No Wasm-level call is nested, so the overhead is a branch and, for `fd_write`, one
//! descriptor lookup. Passing the budget traps with [`WriteLimitExceeded`], which the child
//! reports as `write_limit`. Components get the same rules from [`add_to_component_linker`]
//! (creating methods of `wasi:filesystem/types`) and [`crate::file_streams`] (bytes).
//!
//! Rules: a write is charged when its descriptor is a regular file (stdout and stderr are
//! pipes, never charged), by the bytes actually written, including overwrites; a write that
//! would take the total past the budget traps without writing. `path_open` with `O_CREAT`
//! counts one file when it creates one (it is tried with `O_EXCL` first and, if the path
//! exists, as asked); every `path_create_directory`, `path_symlink` and `path_link` counts one.
//! (`O_CREAT` through a dangling symlink creates the target uncharged, but the symlink was
//! charged: a task creates at most twice its budget of inodes.) `fd_filestat_set_size`
//! (a sparse extension, no bytes written) and `path_rename` (nothing new) are not charged;
//! `fd_allocate` is refused by wasmtime-wasi itself.

use crate::template::TaskState;
use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::types::{Errno, Fd, Filetype, Lookupflags};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as abi, WasiSnapshotPreview1};
use wiggle::{GuestMemory, GuestPtr};

/// Default budget of bytes a task may write to files (used by the command line): 256 MiB.
pub const DEFAULT_MAX_WRITE: u64 = 256 << 20;
/// Default budget of files, directories and links a task may create (command line): 10,000.
pub const DEFAULT_MAX_FILES: u64 = 10_000;

/// What a task may still write, and what it has written.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WriteBudget {
    pub max_bytes: Option<u64>,
    pub max_files: Option<u64>,
    pub bytes: u64,
    pub files: u64,
}

/// The trap that ends a task passing its write budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteLimitExceeded {
    /// A write would take the bytes written to files past the budget.
    #[error(
        "write limit: the task has written {written} bytes to files and asked to write {asked} \
         more, past its limit (max_write) of {limit} bytes"
    )]
    Bytes { limit: u64, written: u64, asked: u64 },
    /// Creating one more file, directory or link would pass the budget.
    #[error(
        "write limit: the task asked to create more than its limit (max_files) of {limit} \
         files, directories and links"
    )]
    Files { limit: u64 },
}

impl WriteBudget {
    pub(crate) fn new(max_bytes: Option<u64>, max_files: Option<u64>) -> Self {
        Self { max_bytes, max_files, bytes: 0, files: 0 }
    }

    fn check_bytes(&self, asked: u64) -> Result<(), WriteLimitExceeded> {
        match self.max_bytes {
            Some(limit) if self.bytes.saturating_add(asked) > limit => {
                Err(WriteLimitExceeded::Bytes { limit, written: self.bytes, asked })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn check_file(&self) -> Result<(), WriteLimitExceeded> {
        match self.max_files {
            Some(limit) if self.files >= limit => Err(WriteLimitExceeded::Files { limit }),
            _ => Ok(()),
        }
    }
}

const MODULE: &str = "wasi_snapshot_preview1";
/// `oflags` bits of `path_open`.
const O_CREAT: i32 = 1;
const O_EXCL: i32 = 4;

/// The guest's memory and the task's state, as wasmtime-wasi's own linker entries get them
/// (`export` is the caller's `memory` export).
fn split<'a>(
    caller: &'a mut Caller<'_, TaskState>,
    export: &'a Option<Extern>,
) -> wasmtime::Result<(GuestMemory<'a>, &'a mut TaskState)> {
    let fuel = caller.as_context_mut().hostcall_fuel();
    let (mem, state) = match export {
        Some(Extern::Memory(m)) => {
            let (mem, state) = m.data_and_store_mut(caller);
            (GuestMemory::Unshared(mem), state)
        }
        Some(Extern::SharedMemory(m)) => (GuestMemory::Shared(m.data()), caller.data_mut()),
        _ => wasmtime::bail!("missing required memory export"),
    };
    state.wasi.set_hostcall_fuel(fuel);
    Ok((mem, state))
}

fn read_u32(mem: &GuestMemory<'_>, addr: i32) -> Option<u32> {
    mem.read(GuestPtr::<u32>::new(addr as u32)).ok()
}

/// The length of the first non-empty buffer of a ciovec array: what wasmtime-wasi writes in
/// one `fd_write`/`fd_pwrite` (it writes that buffer only). 0 if the array is unreadable (the
/// call then fails on its own).
fn first_buffer_len(mem: &GuestMemory<'_>, iovs: i32, iovs_len: i32) -> u64 {
    for i in 0..iovs_len as u32 {
        let Some(len_at) =
            (iovs as u32).checked_add(i.saturating_mul(8)).and_then(|a| a.checked_add(4))
        else {
            return 0;
        };
        match read_u32(mem, len_at as i32) {
            Some(0) => continue,
            Some(len) => return len.into(),
            None => return 0,
        }
    }
    0
}

/// Whether `fd` is a regular file (not stdio, a directory or a device).
async fn is_regular_file(state: &mut TaskState, mem: &mut GuestMemory<'_>, fd: i32) -> bool {
    matches!(
        state.wasi.fd_fdstat_get(mem, Fd::from(fd as u32)).await,
        Ok(st) if st.fs_filetype == Filetype::RegularFile
    )
}

/// Whether `path` (relative to `dirfd`) names something already.
async fn exists(
    state: &mut TaskState,
    mem: &mut GuestMemory<'_>,
    dirfd: i32,
    dirflags: i32,
    path: i32,
    path_len: i32,
) -> bool {
    let flags = Lookupflags::from_bits_truncate(dirflags as u32);
    let path = GuestPtr::<str>::new((path as u32, path_len as u32));
    state.wasi.path_filestat_get(mem, Fd::from(dirfd as u32), flags, path).await.is_ok()
}

/// Shadows the writing and creating functions of the preview1 imports already in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        MODULE,
        "fd_write",
        |mut caller: Caller<'_, TaskState>,
         (fd, iovs, iovs_len, nwritten): (i32, i32, i32, i32)| {
            Box::new(async move {
                let export = caller.get_export("memory");
                let (mut mem, state) = split(&mut caller, &export)?;
                let charged =
                    state.writes.max_bytes.is_some() && is_regular_file(state, &mut mem, fd).await;
                if charged {
                    state.writes.check_bytes(first_buffer_len(&mem, iovs, iovs_len))?;
                }
                let errno =
                    abi::fd_write(&mut state.wasi, &mut mem, fd, iovs, iovs_len, nwritten).await?;
                if charged && errno == 0 {
                    let n = read_u32(&mem, nwritten).unwrap_or(0);
                    state.writes.bytes = state.writes.bytes.saturating_add(n.into());
                }
                Ok(errno)
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "fd_pwrite",
        |mut caller: Caller<'_, TaskState>,
         (fd, iovs, iovs_len, offset, nwritten): (i32, i32, i32, i64, i32)| {
            Box::new(async move {
                let export = caller.get_export("memory");
                let (mut mem, state) = split(&mut caller, &export)?;
                let charged =
                    state.writes.max_bytes.is_some() && is_regular_file(state, &mut mem, fd).await;
                if charged {
                    state.writes.check_bytes(first_buffer_len(&mem, iovs, iovs_len))?;
                }
                let errno =
                    abi::fd_pwrite(&mut state.wasi, &mut mem, fd, iovs, iovs_len, offset, nwritten)
                        .await?;
                if charged && errno == 0 {
                    let n = read_u32(&mem, nwritten).unwrap_or(0);
                    state.writes.bytes = state.writes.bytes.saturating_add(n.into());
                }
                Ok(errno)
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "path_open",
        |mut caller: Caller<'_, TaskState>,
         (fd, dirflags, path, path_len, oflags, base, inheriting, fdflags, opened): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i64,
            i64,
            i32,
            i32,
        )| {
            Box::new(async move {
                let export = caller.get_export("memory");
                let (mut mem, state) = split(&mut caller, &export)?;
                let open = async |state: &mut TaskState, mem: &mut GuestMemory<'_>, oflags| {
                    abi::path_open(
                        &mut state.wasi,
                        mem,
                        fd,
                        dirflags,
                        path,
                        path_len,
                        oflags,
                        base,
                        inheriting,
                        fdflags,
                        opened,
                    )
                    .await
                };
                if state.writes.max_files.is_none() || oflags & O_CREAT == 0 {
                    return open(state, &mut mem, oflags).await;
                }
                if state.writes.check_file().is_err() {
                    // Budget spent: only an open that creates nothing may proceed.
                    if oflags & O_EXCL == 0
                        && exists(state, &mut mem, fd, dirflags, path, path_len).await
                    {
                        return open(state, &mut mem, oflags).await;
                    }
                    state.writes.check_file()?;
                }
                // Try creating exclusively: success means a new file (charged); EEXIST means
                // it existed, and the open proceeds as asked. No extra system call for a new
                // file, one failed open for an existing one.
                let errno = open(state, &mut mem, oflags | O_EXCL).await?;
                if errno == 0 {
                    state.writes.files += 1;
                    return Ok(errno);
                }
                if errno == Errno::Exist as i32 && oflags & O_EXCL == 0 {
                    return open(state, &mut mem, oflags).await;
                }
                Ok(errno)
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "path_create_directory",
        |mut caller: Caller<'_, TaskState>, (fd, path, path_len): (i32, i32, i32)| {
            Box::new(async move {
                let export = caller.get_export("memory");
                let (mut mem, state) = split(&mut caller, &export)?;
                state.writes.check_file()?;
                let errno =
                    abi::path_create_directory(&mut state.wasi, &mut mem, fd, path, path_len)
                        .await?;
                if errno == 0 {
                    state.writes.files += 1;
                }
                Ok(errno)
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "path_symlink",
        |mut caller: Caller<'_, TaskState>,
         (old, old_len, fd, new, new_len): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let export = caller.get_export("memory");
                let (mut mem, state) = split(&mut caller, &export)?;
                state.writes.check_file()?;
                let errno =
                    abi::path_symlink(&mut state.wasi, &mut mem, old, old_len, fd, new, new_len)
                        .await?;
                if errno == 0 {
                    state.writes.files += 1;
                }
                Ok(errno)
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "path_link",
        |mut caller: Caller<'_, TaskState>,
         (old_fd, old_flags, old, old_len, new_fd, new, new_len): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
        )| {
            Box::new(async move {
                let export = caller.get_export("memory");
                let (mut mem, state) = split(&mut caller, &export)?;
                state.writes.check_file()?;
                let errno = abi::path_link(
                    &mut state.wasi,
                    &mut mem,
                    old_fd,
                    old_flags,
                    old,
                    old_len,
                    new_fd,
                    new,
                    new_len,
                )
                .await?;
                if errno == 0 {
                    state.writes.files += 1;
                }
                Ok(errno)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Shadows the creating methods of `wasi:filesystem/types` in a component linker that already
/// has WASI preview2, with the preview1 rules above: `open-at` with `create` counts one file
/// when it creates one (tried `exclusive` first), every `create-directory-at`, `symlink-at`
/// and `link-at` counts one, and passing the budget traps with [`WriteLimitExceeded`]. Each
/// wrapper calls wasmtime-wasi's own implementation of the method (`HostDescriptor`), so
/// permission checks and error codes are its own.
pub(crate) fn add_to_component_linker(
    linker: &mut wasmtime::component::Linker<TaskState>,
) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::filesystem::types::{
        DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
    };
    type Store<'a> = wasmtime::StoreContextMut<'a, TaskState>;
    /// A second borrow of a method's `self` descriptor (a borrow handle is just its index).
    fn again(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
        Resource::new_borrow(fd.rep())
    }

    linker.allow_shadowing(true);
    let mut types = linker.instance(crate::file_streams::FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: Store<'_>,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let TaskState { wasi, writes, .. } = store.data_mut();
                let mut fs = wasi.filesystem();
                let creates = writes.max_files.is_some() && oflags.contains(OpenFlags::CREATE);
                if creates && writes.check_file().is_err() {
                    // Budget spent: only an open that creates nothing may proceed.
                    let exists = !oflags.contains(OpenFlags::EXCLUSIVE)
                        && fs.stat_at(again(&fd), path_flags, path.clone()).await.is_ok();
                    if !exists {
                        writes.check_file()?;
                    }
                } else if creates {
                    // Creating exclusively first: success means a new file (charged); `exist`
                    // means it was there, and the open proceeds as asked.
                    let excl = oflags | OpenFlags::EXCLUSIVE;
                    match fs.open_at(again(&fd), path_flags, path.clone(), excl, flags).await {
                        Ok(opened) => {
                            writes.files += 1;
                            return Ok((Ok(opened),));
                        }
                        Err(e) => {
                            let code = e.downcast()?;
                            if code != ErrorCode::Exist || oflags.contains(OpenFlags::EXCLUSIVE) {
                                return Ok((Err(code),));
                            }
                        }
                    }
                }
                match fs.open_at(fd, path_flags, path, oflags, flags).await {
                    Ok(opened) => Ok((Ok(opened),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store: Store<'_>, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let TaskState { wasi, writes, .. } = store.data_mut();
                writes.check_file()?;
                match wasi.filesystem().create_directory_at(fd, path).await {
                    Ok(()) => {
                        writes.files += 1;
                        Ok((Ok(()),))
                    }
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store: Store<'_>, (fd, old, new): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let TaskState { wasi, writes, .. } = store.data_mut();
                writes.check_file()?;
                match wasi.filesystem().symlink_at(fd, old, new).await {
                    Ok(()) => {
                        writes.files += 1;
                        Ok((Ok(()),))
                    }
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store: Store<'_>,
         (fd, old_flags, old, new_fd, new): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )| {
            Box::new(async move {
                let TaskState { wasi, writes, .. } = store.data_mut();
                writes.check_file()?;
                match wasi.filesystem().link_at(fd, old_flags, old, new_fd, new).await {
                    Ok(()) => {
                        writes.files += 1;
                        Ok((Ok(()),))
                    }
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_budget_is_exact() {
        let mut b = WriteBudget::new(Some(10), None);
        assert!(b.check_bytes(10).is_ok());
        b.bytes = 10;
        assert!(b.check_bytes(0).is_ok());
        assert_eq!(
            b.check_bytes(1),
            Err(WriteLimitExceeded::Bytes { limit: 10, written: 10, asked: 1 })
        );
    }

    #[test]
    fn files_budget_is_exact() {
        let mut b = WriteBudget::new(None, Some(2));
        assert!(b.check_file().is_ok());
        b.files = 2;
        assert_eq!(b.check_file(), Err(WriteLimitExceeded::Files { limit: 2 }));
        assert!(WriteBudget::new(None, None).check_bytes(u64::MAX).is_ok());
    }
}
