//! Exercises a preopened directory the way real tools do, and tries to leave it.
//!
//! Usage: `fs DIR` where DIR is the guest path of a preopen (e.g. `/data`). Prints one line per
//! step, `NAME ok` or `NAME err KIND`, so a test can assert each step. The escape steps must
//! print `err`.
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ffi::{c_char, c_int};
use std::path::Path;

fn report<T>(name: &str, r: std::io::Result<T>) -> Option<T> {
    match r {
        Ok(v) => {
            println!("{name} ok");
            Some(v)
        }
        Err(e) => {
            println!("{name} err {:?}", e.kind());
            None
        }
    }
}

unsafe extern "C" {
    /// wasi-libc's `symlinkat` (preview 1's `path_symlink`, or preview 2's `symlink-at`, as
    /// the target's libc implements it); std's wrapper is unstable.
    fn symlinkat(target: *const c_char, dirfd: c_int, linkpath: *const c_char) -> c_int;
}

/// `symlink(target, dir/name)` through the C library, on either WASI target.
fn symlink(dir: &Path, target: &str, name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir)?;
    let (target, name) = (cstring(target)?, cstring(name)?);
    // SAFETY: both strings are NUL-terminated and outlive the call; `d` is an open directory.
    let rc = unsafe { symlinkat(target.as_ptr(), d.as_raw_fd(), name.as_ptr()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn cstring(s: &str) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/data".to_string());
    let d = Path::new(&dir);

    // Reading what the host put there.
    report("read_host_file", fs::read_to_string(d.join("input.txt")).map(|s| {
        println!("input={}", s.trim_end());
    }));

    // Create, write, seek, read back, truncate.
    let f = report(
        "create",
        OpenOptions::new().create(true).truncate(true).read(true).write(true).open(d.join("a.txt")),
    );
    if let Some(mut f) = f {
        report("write", f.write_all(b"hello world"));
        report("seek", f.seek(SeekFrom::Start(6)));
        let mut s = String::new();
        report("read", f.read_to_string(&mut s));
        println!("read_back={s}");
        report("truncate", f.set_len(5));
        report("len", f.metadata().map(|m| println!("len={}", m.len())));
    }
    report("mkdir", fs::create_dir(d.join("sub")));
    report("rename", fs::rename(d.join("a.txt"), d.join("sub/b.txt")));
    report("hard_link", fs::hard_link(d.join("sub/b.txt"), d.join("c.txt")));
    report("symlink", symlink(d, "sub/b.txt", "link"));
    report(
        "read_via_symlink",
        fs::read_to_string(d.join("link")).map(|s| println!("via_link={s}")),
    );
    report("readdir", fs::read_dir(d).map(|rd| {
        let mut names: Vec<String> =
            rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        println!("entries={}", names.join(","));
    }));
    report("unlink", fs::remove_file(d.join("c.txt")));
    report("write_result", fs::write(d.join("result.txt"), b"written by the guest\n"));

    // Escapes: every one of these must fail.
    report("escape_dotdot", File::open(d.join("../etc/passwd")));
    report("escape_absolute", File::open("/etc/passwd"));
    report("escape_root_readdir", fs::read_dir("/"));
    report("escape_symlink_create", symlink(d, "/etc/passwd", "out"));
    report("escape_symlink_follow", File::open(d.join("out")));
    report(
        "escape_symlink_dotdot",
        symlink(d, "../../../../etc/passwd", "out2")
            .and_then(|_| File::open(d.join("out2"))),
    );
    report("escape_hard_link", fs::hard_link("/etc/passwd", d.join("pw")));
    report("escape_rename_out", fs::rename(d.join("result.txt"), d.join("../stolen.txt")));
}
