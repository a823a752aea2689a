//! Zygote-side namespace and filesystem confinement, done once per zygote.
//!
//! The zygote (already holding its compiled, instantiated template) unshares user, mount,
//! network, IPC and UTS namespaces, maps one unprivileged uid/gid, and pivots into an empty
//! read-only tmpfs root where the granted directories are bind-mounted at `/g0`, `/g1`, …
//! Every sandbox forked afterwards inherits all of that; each also gets a PID namespace of its
//! own at fork (cheap, and a PID namespace cannot be shared by successive children because it
//! dies with its first process).
//!
//! Why once per zygote: creating a network namespace costs 0.5–2.6 ms and a mount namespace
//! with a pivot ~50 µs — per child that would dominate a sub-millisecond task. What siblings
//! share, and why it is safe: the network namespace has only a loopback interface that is
//! down, and seccomp forbids `socket` anyway, so siblings cannot talk over it; the IPC
//! namespace is empty and seccomp forbids System V IPC and `mq_open`; the root is read-only
//! tmpfs; granted directories are shared by design (they are what the caller granted).

use crate::sys;
use crate::task::DirGrant;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// The uid and gid sandboxes have inside their user namespace (mapped to the invoking user's,
/// so files they create in granted directories belong to that user).
pub const SANDBOX_UID: u32 = 1000;
/// See [`SANDBOX_UID`].
pub const SANDBOX_GID: u32 = 1000;

/// A granted directory as the zygote knows it after confinement.
#[derive(Debug, Clone)]
pub(crate) struct MountedGrant {
    /// The host path as the caller spelled it.
    pub host: PathBuf,
    /// The canonical host path.
    pub canonical: PathBuf,
    /// Where it is mounted inside the sandbox root.
    pub inside: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Errors of confinement, each naming the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("cannot open granted directory {path}")]
    OpenGrant {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create namespaces (are user namespaces enabled? see --namespaces off)")]
    Unshare(#[source] io::Error),
    #[error("cannot write {file}")]
    IdMap {
        file: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the hostname")]
    Hostname(#[source] io::Error),
    #[error("cannot mount {target}")]
    Mount {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot pivot into the sandbox root")]
    PivotRoot(#[source] io::Error),
    #[error("cannot create a sandbox's scratch tmpfs")]
    Scratch(#[source] io::Error),
    #[error("a scratch directory needs namespaces (it is a tmpfs private to each sandbox)")]
    ScratchNeedsNamespaces,
}

/// Confines the calling process: namespaces, id maps, empty root with the grants. Must run
/// single-threaded (unshare of a user namespace requires it).
pub(crate) fn confine_zygote(grants: &[DirGrant]) -> Result<Vec<MountedGrant>, NamespaceError> {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    sys::unshare(
        libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS,
    )
    .map_err(NamespaceError::Unshare)?;
    let write = |file: &'static str, text: String| {
        fs::write(file, text).map_err(|source| NamespaceError::IdMap { file, source })
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{SANDBOX_UID} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{SANDBOX_GID} {gid} 1"))?;
    sys::sethostname("zeroboot").map_err(NamespaceError::Hostname)?;

    // Open every grant now, while host paths still resolve: they are bind-mounted by
    // descriptor after the tmpfs root covers /tmp. (Opened after unshare, because a bind
    // mount's source must belong to the caller's mount namespace.)
    let mut opened = Vec::new();
    for (i, g) in grants.iter().enumerate() {
        let open_err = |source| NamespaceError::OpenGrant { path: g.host.clone(), source };
        let canonical = fs::canonicalize(&g.host).map_err(open_err)?;
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&canonical)
            .map_err(open_err)?;
        // A detached copy of the grant's mount tree, taken before the root tmpfs covers /tmp:
        // a recursive bind of /proc/self/fd/N made afterwards would carry that tmpfs along, and
        // a grant of /tmp itself (or of /) would show the empty root instead of its files.
        let dir = sys::clone_mount_tree(dir.as_fd()).map_err(open_err)?;
        let mounted = MountedGrant {
            host: g.host.clone(),
            canonical,
            inside: format!("/g{i}"),
            read_only: g.read_only,
        };
        opened.push((mounted, dir));
    }

    let mount = |src: Option<&str>, target: &str, fs: Option<&str>, flags, data: Option<&str>| {
        sys::mount(src, target, fs, flags, data)
            .map_err(|source| NamespaceError::Mount { target: target.to_string(), source })
    };
    // Nothing we mount propagates back to the host.
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    // The new root: a small tmpfs over /tmp (only in our mount namespace).
    const ROOT: &str = "/tmp";
    let root_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(Some("tmpfs"), ROOT, Some("tmpfs"), root_flags, Some("size=64k,mode=0755"))?;
    for (g, dir) in &opened {
        let target = format!("{ROOT}{}", g.inside);
        fs::create_dir(&target)
            .map_err(|source| NamespaceError::Mount { target: target.clone(), source })?;
        sys::attach_mount_tree(dir.as_fd(), &target)
            .map_err(|source| NamespaceError::Mount { target: target.clone(), source })?;
        // Remounting a bind mount must keep the flags the host mount has locked; add ours.
        let host_flags = sys::mount_flags(&target)
            .map_err(|source| NamespaceError::Mount { target: target.clone(), source })?;
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
        for (st, ms) in [
            (libc::ST_RDONLY, libc::MS_RDONLY),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if host_flags & st != 0 {
                flags |= ms;
            }
        }
        if g.read_only {
            flags |= libc::MS_RDONLY;
        }
        mount(None, &target, None, flags, None)?;
    }
    let old = format!("{ROOT}/.old");
    fs::create_dir(&old).map_err(NamespaceError::PivotRoot)?;
    sys::pivot_root(ROOT, &old).map_err(NamespaceError::PivotRoot)?;
    std::env::set_current_dir("/").map_err(NamespaceError::PivotRoot)?;
    sys::umount2("/.old", libc::MNT_DETACH).map_err(NamespaceError::PivotRoot)?;
    fs::remove_dir("/.old").map_err(NamespaceError::PivotRoot)?;
    mount(None, "/", None, libc::MS_REMOUNT | libc::MS_RDONLY | root_flags, None)?;
    Ok(opened.into_iter().map(|(g, _)| g).collect())
}

/// Whether this machine lets us create the namespaces confinement needs; checked in a
/// throwaway child so the caller is unchanged.
pub fn available() -> bool {
    // SAFETY: the child only calls unshare and _exit, both async-signal-safe, so forking is
    // sound even from a multi-threaded process (such as a test harness).
    match unsafe { sys::fork() } {
        Ok(sys::Fork::Child) => {
            let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWNET;
            sys::exit_now(if sys::unshare(flags).is_ok() { 0 } else { 1 })
        }
        Ok(sys::Fork::Parent(pid)) => {
            matches!(sys::wait(pid), Ok((sys::ExitStatus::Code(0), _)))
        }
        Err(_) => false,
    }
}
