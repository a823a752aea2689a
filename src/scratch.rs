//! A task's scratch directory: files in, files out, private to one sandbox.
//!
//! With [`Isolation::scratch`](crate::Isolation::scratch), the zygote creates a fresh tmpfs
//! for every sandbox it forks as a *detached* mount (`fsopen`/`fsmount`: attached nowhere, so
//! no path leads to it), and the child makes it its working directory before it closes the
//! descriptor. Only that one sandbox ever reaches it: no sibling has a path to it (it is in no
//! mount tree, `/proc` is not mounted, `..` at its root stays at its root), the host and the
//! zygote never hold its contents, and it is freed by the kernel when the sandbox exits.
//!
//! The task's [`files`](crate::Task::files) travel with the task frame (host → sandbox, never
//! through the zygote); the sandbox writes them into the directory, the guest sees it at
//! [`GUEST_PATH`] and as its working directory (`.`), and after the guest returns the sandbox
//! sends back, in its report, the regular files that are new or changed, within
//! [`Task::files_out`](crate::Task::files_out).
//!
//! The sandbox does this after its seccomp filter is installed: files are written with
//! `pwrite64` and read with `pread64` (plain `write`/`read` are allowed only on its stdio).

use crate::child::Preopen;
use cap_std::fs::Dir;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Where the guest sees its scratch directory (it is its working directory too).
pub const GUEST_PATH: &str = "/scratch";
/// Default size of a sandbox's scratch tmpfs: 64 MiB.
pub const DEFAULT_SCRATCH_SIZE: u64 = 64 << 20;
/// Deepest directory nesting of a file name, in and out.
const MAX_DEPTH: usize = 16;
/// Most files looked at after the guest (past it, the outcome is flagged truncated).
const MAX_WALK: usize = 10_000;

/// A file in a task's scratch directory: its relative path (`/`-separated) and its bytes.
/// JSON: `{"name": "…", "bytes": "<base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScratchFile {
    pub name: String,
    #[serde(with = "crate::task::base64_bytes")]
    pub bytes: Vec<u8>,
}

/// How much of what a task leaves in its scratch directory comes back in its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilesOut {
    /// Most files returned.
    pub max_files: usize,
    /// Most bytes returned, all files together.
    pub max_bytes: usize,
}

/// Checks a file name: relative, `/`-separated normal components (no `.`, `..`, empty or
/// absolute parts), no NUL, at most [`MAX_DEPTH`] deep and 4096 bytes long.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("file name {name:?} {why}"));
    if name.is_empty() || name.len() > 4096 {
        return bad("must have 1 to 4096 bytes");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return bad("is nested too deep");
    }
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return bad("must be a relative path without empty, `.` or `..` parts");
    }
    Ok(())
}

/// The preopens of the scratch directory: at [`GUEST_PATH`] and as `.`.
pub(crate) fn preopens() -> [Preopen; 2] {
    [
        Preopen { path: ".".into(), guest: GUEST_PATH.into(), read_only: false },
        Preopen { path: ".".into(), guest: ".".into(), read_only: false },
    ]
}

/// The working directory (the scratch tmpfs), opened so that everything below goes through
/// `openat`, `mkdirat` and friends (plain `mkdir` is not in the sandbox's allowlist).
fn here() -> io::Result<Dir> {
    Dir::open_ambient_dir(".", cap_std::ambient_authority())
}

/// In the sandbox: writes the task's files into the working directory (the scratch tmpfs).
pub(crate) fn populate(files: &[ScratchFile]) -> io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let dir = here()?;
    for f in files {
        check_name(&f.name).map_err(io::Error::other)?;
        let path = Path::new(&f.name);
        if let Some(parent) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            dir.create_dir_all(parent)?;
        }
        let mut options = cap_std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        let file = dir.open_with(path, &options)?.into_std();
        file.write_all_at(&f.bytes, 0)?;
    }
    Ok(())
}

/// In the sandbox, after the guest: the regular files of the working directory that are not
/// among `inputs` or differ from them, in name order, within `limits`; and whether any were
/// left out. Symbolic links and other special files are not returned.
pub(crate) fn collect(inputs: &[ScratchFile], limits: FilesOut) -> (Vec<ScratchFile>, bool) {
    let Ok(dir) = here() else { return (Vec::new(), true) };
    let mut names = Vec::new();
    walk(&dir, "", &mut names, 0);
    let mut truncated = names.len() > MAX_WALK;
    names.sort();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for (name, len) in names {
        let unchanged = inputs.iter().find(|f| f.name == name).is_some_and(|f| {
            u64::try_from(f.bytes.len()).ok() == Some(len)
                && read(&dir, &name, len).is_some_and(|b| b == f.bytes)
        });
        if unchanged {
            continue;
        }
        let Ok(len) = usize::try_from(len) else {
            truncated = true;
            continue;
        };
        if out.len() >= limits.max_files || bytes.saturating_add(len) > limits.max_bytes {
            truncated = true;
            continue;
        }
        match read(&dir, &name, u64::try_from(len).unwrap_or(u64::MAX)) {
            Some(b) => {
                bytes += b.len();
                out.push(ScratchFile { name, bytes: b });
            }
            None => truncated = true,
        }
    }
    (out, truncated)
}

/// Regular files under `dir` (named from `prefix`), as (relative name, size).
fn walk(dir: &Dir, prefix: &str, out: &mut Vec<(String, u64)>, depth: usize) {
    if depth >= MAX_DEPTH || out.len() > MAX_WALK {
        return;
    }
    let Ok(entries) = dir.entries() else { return };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if kind.is_dir() {
            if let Ok(sub) = e.open_dir() {
                walk(&sub, &format!("{name}/"), out, depth + 1);
            }
        } else if kind.is_file()
            && let Ok(meta) = e.metadata()
        {
            out.push((name, meta.len()));
        }
    }
}

/// A file's bytes, read with `pread64`; `None` if it cannot be read or is not `len` long.
fn read(dir: &Dir, name: &str, len: u64) -> Option<Vec<u8>> {
    let file = dir.open(name).ok()?.into_std();
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    let mut at = 0usize;
    while at < buf.len() {
        match file.read_at(&mut buf[at..], at as u64) {
            Ok(0) => return None,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_and_plain() {
        for ok in ["a", "a.txt", "dir/b", "x/y/z.bin", ".hidden"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a/".repeat(20)).is_err());
    }
}
