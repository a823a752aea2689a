//! On-disk cache of compiled modules.
//!
//! `Module::deserialize_file` is `unsafe`: the bytes are trusted to be machine code Wasmtime
//! produced. So we load only from our own cache directory — created with mode 0700, owned by
//! the current user, written only by `CompileCache::store` through a temporary file and an
//! atomic rename — and never from a path a user chose. The file is mapped, not read, so the
//! zygote's compiled code is file-backed (shared, clean) memory — except a large artifact
//! loaded for a zygote that backs its code with huge pages (`src/hugepages.rs`), which is
//! read into anonymous memory: huge pages need it, and fork shares them without a fault.
//!
//! The key is a SHA-256 of the kind (core module or component: the same bytes never name
//! both, but the artifacts differ in type, so the kinds never share a key), the module bytes, Wasmtime's compatibility hash of the engine
//! configuration (which covers the Wasmtime version and every setting that changes code), and
//! this crate's version.

use crate::compile::Compiled;
use crate::entry::GuestKind;
use sha2::{Digest, Sha256};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;

/// Environment variable that overrides the cache directory.
pub const CACHE_DIR_ENV: &str = "ZEROBOOT_WASM_CACHE_DIR";

/// The default cache directory: `$ZEROBOOT_WASM_CACHE_DIR`, else `$XDG_CACHE_HOME/zeroboot-wasm`,
/// else `$HOME/.cache/zeroboot-wasm`.
pub fn default_dir() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    nonempty(CACHE_DIR_ENV)
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("zeroboot-wasm")))
        .or_else(|| nonempty("HOME").map(|d| d.join(".cache").join("zeroboot-wasm")))
}

/// A private directory of compiled modules.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    /// Artifacts at least this large are read into anonymous memory instead of mapped
    /// (`None`: always mapped).
    read_from: Option<u64>,
}

/// Feeds `Hash` output into SHA-256 so the engine's compatibility hash becomes part of the key.
struct ShaHasher<'a>(&'a mut Sha256);
impl Hasher for ShaHasher<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

impl CompileCache {
    /// Opens (creating if needed) a cache directory we can trust: owned by us and not writable
    /// by anyone else. Returns an error saying why a directory is unusable.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let meta = fs::metadata(dir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != euid || meta.permissions().mode() & 0o022 != 0 {
            return Err(io::Error::other(format!(
                "{} is not a private directory owned by uid {euid}",
                dir.display()
            )));
        }
        Ok(Self { dir: dir.to_path_buf(), read_from: None })
    }

    /// Reads artifacts of at least `bytes` into anonymous memory instead of mapping them.
    pub(crate) fn read_from(mut self, bytes: Option<u64>) -> Self {
        self.read_from = bytes;
        self
    }

    fn path_for(&self, engine: &Engine, kind: GuestKind, bytes: &[u8]) -> PathBuf {
        let mut sha = Sha256::new();
        sha.update(b"zeroboot-wasm ");
        sha.update(env!("CARGO_PKG_VERSION").as_bytes());
        sha.update(b" ");
        sha.update(kind.as_str().as_bytes());
        engine.precompile_compatibility_hash().hash(&mut ShaHasher(&mut sha));
        sha.update((bytes.len() as u64).to_le_bytes());
        sha.update(bytes);
        let hex: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.cwasm"))
    }

    /// Loads the compiled form of `bytes` if cached.
    pub(crate) fn load(&self, engine: &Engine, kind: GuestKind, bytes: &[u8]) -> Option<Compiled> {
        let path = self.path_for(engine, kind, bytes);
        if !path.exists() {
            return None;
        }
        // SAFETY: `path` is inside our private cache directory (checked in `open`: owned by us,
        // not writable by group or others) and was written only by `store` below, from
        // `Module::serialize` of this engine's configuration (the key includes its
        // compatibility hash), via an atomic rename, so it is never partial. Wasmtime still
        // checks the header and version and returns an error for a mismatch.
        let read = match (self.read_from, fs::metadata(&path)) {
            (Some(min), Ok(meta)) if meta.len() >= min => Some(fs::read(&path).ok()?),
            _ => None,
        };
        let loaded = match &read {
            // SAFETY: as above; the bytes were read from that file.
            Some(bytes) => unsafe { Compiled::deserialize(engine, kind, bytes) },
            // SAFETY: as above.
            None => unsafe { Compiled::deserialize_file(engine, kind, &path) },
        };
        match loaded {
            Ok(m) => Some(m),
            Err(_) => {
                // Stale or damaged: drop it so `store` writes a fresh one.
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes `module`'s compiled form, then loads it back file-backed. Returns `None` (the
    /// caller keeps its in-memory module) if either step fails.
    pub(crate) fn store(
        &self,
        engine: &Engine,
        bytes: &[u8],
        module: &Compiled,
    ) -> Option<Compiled> {
        self.write(engine, bytes, module).ok()?;
        self.load(engine, module.kind(), bytes)
    }

    /// Writes `module`'s compiled form (a temporary file, then an atomic rename), without
    /// loading it back: what the compiler process does before it exits.
    pub(crate) fn write(&self, engine: &Engine, bytes: &[u8], module: &Compiled) -> io::Result<()> {
        let path = self.path_for(engine, module.kind(), bytes);
        let data = module.serialize().map_err(|e| io::Error::other(format!("{e:#}")))?;
        let (tmp_path, mut tmp) = tempfile_in(&self.dir)?;
        let written = tmp.write_all(&data).and_then(|()| tmp.sync_all());
        if let Err(e) = written.and_then(|()| fs::rename(&tmp_path, &path)) {
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        Ok(())
    }
}

/// Creates a new file with a unique name in `dir` (mode 0600).
fn tempfile_in(dir: &Path) -> io::Result<(PathBuf, fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut rnd = [0u8; 8];
    crate::sys::getrandom(&mut rnd)?;
    let name = format!(".tmp-{}-{}", std::process::id(), u64::from_le_bytes(rnd));
    let path = dir.join(name);
    let f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    Ok((path, f))
}
