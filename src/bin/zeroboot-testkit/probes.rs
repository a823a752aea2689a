//! The escape probes: native code run in a sandbox, after seccomp, through exactly the setup
//! a guest gets — namespaces, rlimits, no capabilities, no new privileges, seccomp — each
//! attempting one escape. The probe's finding is its stdout: `NAME: allowed …` or
//! `NAME: refused …`. A probe stopped by seccomp has status `sandbox_violation` and no finding.
//!
//! These are deliberate raw system calls — the escape attempts themselves — so they live here
//! rather than in `sys`, and share one safety argument (below, in `probe`) instead of one
//! comment per block.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::io::Error as IoError;

/// `ok` or the OS error of the last call.
fn verdict(name: &str, ret: i64) -> String {
    if ret < 0 {
        format!("{name}: refused {}", IoError::last_os_error())
    } else {
        format!("{name}: allowed (returned {ret})")
    }
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Runs in the sandbox, after seccomp: args[0] names the probe; `dirs` maps each preopened
/// directory's guest path to the path it is opened from inside the sandbox.
pub fn probe(args: &[String], dirs: &[(&str, &str)]) -> String {
    let name = args.first().map(String::as_str).unwrap_or("");
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    // SAFETY (for every block below): each call is a plain system call with valid, live
    // arguments (NUL-terminated strings, initialised structs); the point of the probe is to
    // see whether the sandbox lets it happen, and the sandbox process ends right after.
    let ret: i64 = match name {
        "open_passwd" => unsafe { libc::open(c("/etc/passwd").as_ptr(), libc::O_RDONLY) }.into(),
        "read_proc_environ" => {
            unsafe { libc::open(c("/proc/1/environ").as_ptr(), libc::O_RDONLY) }.into()
        }
        "list_root" => {
            return match std::fs::read_dir("/") {
                Ok(rd) => {
                    let mut names: Vec<String> = rd
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    format!("list_root: allowed [{}]", names.join(","))
                }
                Err(e) => format!("list_root: refused {e}"),
            };
        }
        "open_fds" => {
            let open: Vec<String> = (0..1024)
                .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
                .map(|fd| fd.to_string())
                .collect();
            return format!("open_fds: [{}]", open.join(","));
        }
        "connect_inet" => {
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if fd < 0 {
                return verdict("connect_inet socket", -1);
            }
            let addr: std::net::SocketAddrV4 = match arg(1).parse() {
                Ok(a) => a,
                Err(_) => return "connect_inet: bad address argument".into(),
            };
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: addr.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), len) }.into()
        }
        "connect_abstract" => {
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            if fd < 0 {
                return verdict("connect_abstract socket", -1);
            }
            let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let path = arg(1);
            for (i, b) in path.bytes().take(100).enumerate() {
                sa.sun_path[i + 1] = b as libc::c_char;
            }
            let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + path.len().min(100))
                as libc::socklen_t;
            unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_un).cast(), len) }.into()
        }
        "execve" => {
            let sh = c("/bin/sh");
            let argv = [sh.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            unsafe { libc::execve(sh.as_ptr(), argv.as_ptr(), envp.as_ptr()) }.into()
        }
        "fork" => {
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                unsafe { libc::_exit(0) };
            }
            pid.into()
        }
        "clone" => unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        },
        "ptrace_parent" => {
            let pid: libc::pid_t = arg(1).parse().unwrap_or(1);
            unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize) }
        }
        "kill_parent" => {
            let pid: libc::pid_t = arg(1).parse().unwrap_or(1);
            unsafe { libc::kill(pid, libc::SIGKILL) }.into()
        }
        "mount" => unsafe {
            libc::mount(
                c("none").as_ptr(),
                c("/").as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                std::ptr::null(),
            )
        }
        .into(),
        "unshare" => unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) }.into(),
        "setuid0" => unsafe { libc::setuid(0) }.into(),
        "chroot" => unsafe { libc::chroot(c("/").as_ptr()) }.into(),
        "bpf" => {
            let mut attr = [0u8; 128];
            unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    0, /* BPF_MAP_CREATE */
                    attr.as_mut_ptr(),
                    attr.len(),
                )
            }
        }
        "keyctl" => unsafe {
            libc::syscall(libc::SYS_keyctl, 1 /* JOIN_SESSION_KEYRING */, 0usize)
        },
        "io_uring_setup" => {
            let mut params = [0u8; 120];
            unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) }
        }
        "perf_event_open" => {
            let mut attr = [0u8; 128];
            attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
            unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0) }
        }
        "write_past_fsize" => {
            // args: PATH SIZE — create PATH and try to write SIZE bytes with pwrite64.
            let path = c(&arg(1));
            let size: usize = arg(2).parse().unwrap_or(1 << 20);
            let fd = unsafe {
                libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, 0o644)
            };
            if fd < 0 {
                return verdict("write_past_fsize open", -1);
            }
            let buf = vec![b'x'; 4096];
            let mut written = 0usize;
            while written < size {
                let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), written as i64) };
                if n < 0 {
                    return format!(
                        "write_past_fsize: refused {} after {written} bytes",
                        IoError::last_os_error()
                    );
                }
                written += n as usize;
            }
            written as i64
        }
        "write_in_grant" => {
            // args: GUEST NAME — create NAME in the directory the task preopens at GUEST,
            // through the sandbox path the guest's preopen is opened from (its mount).
            let Some(&(_, inside)) = dirs.iter().find(|(guest, _)| *guest == arg(1)) else {
                return format!("write_in_grant: no preopen at {:?}", arg(1));
            };
            let path = c(&format!("{inside}/{}", arg(2)));
            unsafe {
                libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, 0o644)
            }
            .into()
        }
        "scratch_hold" => return scratch_hold(&arg(1), &arg(2), &arg(3)),
        "scratch_seek" => return scratch_seek(&arg(1), &arg(2)),
        other => return format!("unknown probe {other:?}"),
    };
    verdict(name, ret)
}

fn sleep_ms(ms: &str) {
    std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
}

/// args: NAME MS [DIR] — writes NAME in the working directory (the sandbox's scratch), or in
/// DIR, holds it for MS, then says whether it is still there.
fn scratch_hold(name: &str, ms: &str, dir: &str) -> String {
    use std::os::unix::fs::FileExt;
    let name = if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
    let name = name.as_str();
    let wrote = std::fs::File::create(name).and_then(|f| f.write_all_at(b"secret", 0));
    sleep_ms(ms);
    let still = std::fs::metadata(name).is_ok();
    format!("scratch_hold: wrote {name}: {}, still there: {still}", wrote.is_ok())
}

/// args: NAME MS — after MS, looks for a file NAME (which a sibling sandbox holds in its own
/// scratch) everywhere a path can reach: its own working directory, `..` of it, `/scratch`,
/// and the whole tree from `/`.
fn scratch_seek(name: &str, ms: &str) -> String {
    sleep_ms(ms);
    let mut found = Vec::new();
    for p in [name.to_string(), format!("../{name}"), format!("/scratch/{name}")] {
        if std::fs::metadata(&p).is_ok() {
            found.push(p);
        }
    }
    fn walk(dir: &std::path::Path, name: &str, depth: usize, found: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy() == name {
                found.push(p.display().to_string());
            }
            if depth < 8 && e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, name, depth + 1, found);
            }
        }
    }
    walk(std::path::Path::new("/"), name, 0, &mut found);
    walk(std::path::Path::new(".."), name, 0, &mut found);
    let own: Vec<String> = std::fs::read_dir(".")
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    if found.is_empty() {
        format!("scratch_seek: {name} not found; own scratch holds {own:?}")
    } else {
        format!("scratch_seek: {name} FOUND at {found:?}")
    }
}
