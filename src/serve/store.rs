//! The tool store: uploaded modules, content-addressed by the SHA-256 of their bytes, each
//! loaded into a zygote of its own.
//!
//! On disk, in `<data-dir>/tools/`: `<id>.wasm` (the bytes as uploaded) and `<id>.json` (its
//! metadata, written last: a tool exists once its metadata does). Both are written to a
//! temporary name and renamed, so a crash never leaves half a file under a tool's name. At
//! start-up every stored tool is checked against its hash and loaded again.

use crate::entry::{ExportedFunc, GuestKind, ValKind};
use crate::error::Error;
use crate::host::{LoadOptions, ModuleSource, Runtime, TemplateHandle};
use crate::wit_type::WitType;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// What a tool is: a command (`_start`) or a reactor (exports to invoke).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Command,
    Reactor,
}

/// A tool's description, as the API returns it and as it is stored beside the module.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ToolMeta {
    /// SHA-256 of the module's bytes, in lowercase hex.
    pub id: String,
    pub name: String,
    pub kind: Kind,
    /// Exported functions with their types (derived from the module again on every load:
    /// stored metadata of an older form is read as none).
    #[serde(default, deserialize_with = "exports_or_none")]
    pub exports: Vec<Export>,
    /// Whether its runs get a scratch directory for `files` (and the files they leave): the
    /// server gives them and the tool imports a WASI filesystem call. Derived on every load.
    #[serde(default)]
    pub scratch: bool,
    /// Size of the module in bytes.
    pub size: u64,
    /// When it was first uploaded, in seconds since the Unix epoch.
    pub created: u64,
    /// Its runs' default limits, given at upload (each run may ask for others, up to the
    /// server's).
    #[serde(default, skip_serializing_if = "super::api::Limits::is_empty")]
    pub limits: super::api::Limits,
    /// What the tool does and the JSON Schema of its input, for MCP clients (optional).
    #[serde(flatten)]
    pub about: About,
}

/// An exported function as the API shows it: its parameter and result types as Wasm or WIT
/// spells them and, for a component's function, JSON Schemas of its arguments (an object by
/// parameter name: a run's `arguments`, an MCP call's input) and of its result.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Export {
    pub name: String,
    pub params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub param_names: Vec<String>,
    pub results: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
}

impl Export {
    /// `f` as the API shows it; a component's functions (`kind`) get schemas.
    fn of(f: &ExportedFunc, kind: GuestKind) -> Export {
        let wit: Option<Vec<&WitType>> = f
            .params
            .iter()
            .map(|k| match k {
                ValKind::Wit(t) => Some(t),
                _ => None,
            })
            .collect();
        let results: Option<Vec<WitType>> = f
            .results
            .iter()
            .map(|k| match k {
                ValKind::Wit(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        // Only a function every parameter of which a JSON argument can give has a schema
        // (not one taking a resource, a future or a stream).
        let callable = |w: &Vec<&WitType>| {
            kind == GuestKind::Component
                && w.len() == f.param_names.len()
                && w.iter().all(|t| t.to_wave().is_some())
        };
        let input_schema = wit.filter(callable).map(|w| {
            let named: Vec<(String, WitType)> =
                f.param_names.iter().cloned().zip(w.into_iter().cloned()).collect();
            crate::wit_type::object_schema(&named)
        });
        Export {
            name: f.name.clone(),
            params: f.params.iter().map(ToString::to_string).collect(),
            param_names: f.param_names.clone(),
            results: f.results.iter().map(ToString::to_string).collect(),
            output_schema: input_schema
                .as_ref()
                .and(results.map(|r| crate::wit_type::results_schema(&r))),
            input_schema,
        }
    }

    /// The function's own name: `add` for `pkg:name/iface#add`.
    pub(crate) fn func(&self) -> &str {
        self.name.rsplit_once('#').map_or(self.name.as_str(), |(_, f)| f)
    }
}

/// Stored exports, or none if they are of an older form (they are derived again on load).
fn exports_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Export>, D::Error> {
    let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
    Ok(serde_json::from_value(v).unwrap_or_default())
}

/// What an uploader may say about a tool for MCP clients: a description and a JSON Schema
/// for its input. With a schema, an MCP call's arguments (an object matching it) are the
/// guest's stdin, as JSON; without one, the tool takes `args`, `stdin` and `env`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct About {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Longest tool description accepted, in bytes.
pub(crate) const MAX_DESCRIPTION_LEN: usize = 4096;
/// Largest input schema accepted, in bytes of JSON.
pub(crate) const MAX_SCHEMA_LEN: usize = 64 * 1024;

impl About {
    /// A description and a schema (JSON text) as given to an upload, checked: the
    /// description at most 4 KiB, the schema a JSON object of type `object` of at most 64 KiB.
    pub fn parse(description: Option<String>, input_schema: Option<&str>) -> Result<Self, String> {
        if let Some(d) = &description
            && d.len() > MAX_DESCRIPTION_LEN
        {
            return Err(format!(
                "the description is {} bytes long; at most {MAX_DESCRIPTION_LEN} are accepted",
                d.len()
            ));
        }
        let input_schema = match input_schema {
            None => None,
            Some(text) if text.len() > MAX_SCHEMA_LEN => {
                return Err(format!(
                    "input_schema is {} bytes long; at most {MAX_SCHEMA_LEN} are accepted",
                    text.len()
                ));
            }
            Some(text) => {
                let schema: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| format!("input_schema is not JSON: {e}"))?;
                let serde_json::Value::Object(schema) = schema else {
                    return Err("input_schema must be a JSON Schema object".into());
                };
                if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
                    return Err(
                        "input_schema must describe an object (\"type\": \"object\"): MCP tool arguments are objects".into(),
                    );
                }
                Some(schema)
            }
        };
        Ok(Self { description, input_schema })
    }
}

/// A loaded tool: its description and its warm template.
#[derive(Debug)]
pub(crate) struct Tool {
    pub meta: ToolMeta,
    pub handle: TemplateHandle,
}

/// Why a tool could not be added.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AddError {
    /// The name is not acceptable.
    #[error("{0}")]
    BadName(String),
    /// The store holds as many tools as it may.
    #[error("the server holds its maximum of {max} tools (--max-tools): delete one first")]
    Full { max: usize },
    /// As many modules as allowed are being loaded already.
    #[error("busy: {loading} other uploads are being loaded")]
    Busy { loading: usize },
    /// The module did not load: invalid, hostile, or the zygote could not be started.
    #[error(transparent)]
    Load(Error),
    /// The store could not be written.
    #[error("cannot store the tool in {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Longest tool name accepted.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// Checks a tool name: 1 to 128 of `A-Z a-z 0-9 . _ + -` (it is the guest's `argv[0]`, and
/// appears in logs).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(ok_char) {
        return Err(format!(
            "invalid tool name {name:?}: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ + -"
        ));
    }
    Ok(())
}

/// Whether `id` looks like a tool id (64 lowercase hex digits); anything else is no tool.
pub(crate) fn is_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The id of these bytes.
pub(crate) fn id_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The store and the loaded tools.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    runtime: Runtime,
    load: LoadOptions,
    tools: RwLock<HashMap<String, Arc<Tool>>>,
    /// Tools on disk that did not load (at start-up, or when another server added them), with
    /// why: out of service, yet not unknown. Runs of one get 503 with the reason, `/v1/health`
    /// lists them as not ready, and `DELETE` removes their files.
    unloaded: RwLock<HashMap<String, String>>,
    /// One lock per tool id being added or removed (see [`Store::with_id_locked`]).
    id_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Uploads loading a new module at once (each compiles it and starts a zygote); past
    /// it, [`AddError::Busy`]. An upload of a tool already there needs none.
    loads: tokio::sync::Semaphore,
    max_loads: usize,
    /// Tools in service plus tools being added: each is a zygote process (and its pool).
    places: AtomicUsize,
    max_tools: usize,
}

/// A place taken in the store for a tool being added; given back when dropped unless kept.
struct Place<'a> {
    places: &'a AtomicUsize,
    kept: bool,
}

impl Place<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.places.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl Store {
    /// The store in `dir` (created if missing), holding at most `max_tools` tools and
    /// loading at most `max_loads` uploads at once; nothing is loaded yet.
    pub fn open(
        dir: PathBuf,
        runtime: Runtime,
        load: LoadOptions,
        max_loads: usize,
        max_tools: usize,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let max_loads = max_loads.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Ok(Self {
            dir,
            runtime,
            load,
            tools: RwLock::new(HashMap::new()),
            unloaded: RwLock::new(HashMap::new()),
            id_locks: Mutex::new(HashMap::new()),
            loads: tokio::sync::Semaphore::new(max_loads),
            max_loads,
            places: AtomicUsize::new(0),
            max_tools,
        })
    }

    /// A place for one more tool, if the store has room.
    fn take_place(&self) -> Option<Place<'_>> {
        self.places
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_tools).then_some(n + 1)
            })
            .ok()
            .map(|_| Place { places: &self.places, kept: false })
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Tool>>> {
        match self.tools.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Tool>>> {
        match self.tools.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write_unloaded(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, String>> {
        match self.unloaded.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Puts a loaded tool in service.
    fn put(&self, id: &str, tool: Arc<Tool>) {
        self.write_map().insert(id.to_string(), tool);
        self.write_unloaded().remove(id);
    }

    /// Records that the stored tool of this metadata file did not load, and why.
    fn not_loaded(&self, json: &Path, why: &str) {
        if let Some(id) = json.file_stem().and_then(|s| s.to_str()).filter(|id| is_id(id)) {
            self.write_unloaded().insert(id.to_string(), why.to_string());
        }
    }

    fn read_unloaded(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, String>> {
        match self.unloaded.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Why a tool on disk is out of service, if it is one that did not load.
    pub fn why_unloaded(&self, id: &str) -> Option<String> {
        self.read_unloaded().get(id).cloned()
    }

    /// The tools on disk that did not load, with why, by id.
    pub fn unloaded(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> =
            self.read_unloaded().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort();
        v
    }

    /// Loads every stored tool again (at start-up). A tool whose module is missing, does not
    /// match its id, or no longer loads is left on disk, out of service, and logged.
    pub async fn reload(&self) -> usize {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the tool store");
                return 0;
            }
        };
        let mut loaded = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match self.reload_one(&path).await {
                Ok(meta) => {
                    tracing::info!(id = %meta.id, name = %meta.name, "tool loaded from the store");
                    loaded += 1;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "stored tool not loaded");
                    self.not_loaded(&path, &e);
                }
            }
        }
        loaded
    }

    /// Loads the stored tools that are not loaded yet: those another process (a `serve` on
    /// the same data directory) added since. Returns how many were loaded.
    pub async fn load_new(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut loaded = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else {
                continue;
            };
            if !is_id(&id) || self.get(&id).is_some() {
                continue;
            }
            let once = async {
                if self.get(&id).is_some() {
                    return Ok(None);
                }
                self.reload_one(&path).await.map(Some)
            };
            match self.with_id_locked(&id, once).await {
                Ok(Some(meta)) => {
                    tracing::info!(id = %meta.id, name = %meta.name, "new stored tool loaded");
                    loaded += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(file = %path.display(), error = %e, "stored tool not loaded");
                    self.not_loaded(&path, &e);
                }
            }
        }
        loaded
    }

    async fn reload_one(&self, json: &Path) -> Result<ToolMeta, String> {
        let text = std::fs::read(json).map_err(|e| e.to_string())?;
        let mut meta: ToolMeta =
            serde_json::from_slice(&text).map_err(|e| format!("unreadable metadata: {e}"))?;
        if !is_id(&meta.id) || json.file_stem().is_none_or(|s| *s != *meta.id) {
            return Err("metadata does not name this tool".into());
        }
        check_name(&meta.name)?;
        let bytes = std::fs::read(self.dir.join(format!("{}.wasm", meta.id)))
            .map_err(|e| format!("cannot read its module: {e}"))?;
        if id_of(&bytes) != meta.id {
            return Err("its module does not match its SHA-256 id".into());
        }
        let place = self.take_place().ok_or_else(|| {
            format!("the server holds its maximum of {} tools (--max-tools)", self.max_tools)
        })?;
        let (handle, kind, exports, scratch) =
            self.load_bytes(&meta.name, bytes.into()).await.map_err(|e| e.one_line())?;
        meta.kind = kind;
        meta.exports = exports;
        meta.scratch = scratch;
        let tool = Arc::new(Tool { meta: meta.clone(), handle });
        self.put(&meta.id, tool);
        place.keep();
        Ok(meta)
    }

    async fn load_bytes(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
    ) -> Result<(TemplateHandle, Kind, Vec<Export>, bool), Error> {
        let source = ModuleSource::Bytes { name: name.to_string(), bytes };
        let handle = self.runtime.load(source, self.load.clone()).await?;
        let exports = handle.exports().await?;
        let scratch = handle.has_scratch().await?;
        let kind = if exports.start { Kind::Command } else { Kind::Reactor };
        let funcs = exports.funcs.iter().map(|f| Export::of(f, exports.kind)).collect();
        Ok((handle, kind, funcs, scratch))
    }

    /// Adds a tool from its bytes, or finds it if these bytes are already a tool. Returns the
    /// tool and whether it is new.
    pub async fn add(
        &self,
        name: Option<String>,
        limits: super::api::Limits,
        about: About,
        bytes: Arc<[u8]>,
    ) -> Result<(Arc<Tool>, bool), AddError> {
        self.add_as(name, limits, about, bytes, true).await
    }

    /// Adds a tool for this process only: loaded and listed, but not written to the store
    /// (`zeroboot-wasm mcp --tool FILE`).
    pub async fn add_unsaved(
        &self,
        name: Option<String>,
        limits: super::api::Limits,
        about: About,
        bytes: Arc<[u8]>,
    ) -> Result<(Arc<Tool>, bool), AddError> {
        self.add_as(name, limits, about, bytes, false).await
    }

    async fn add_as(
        &self,
        name: Option<String>,
        limits: super::api::Limits,
        about: About,
        bytes: Arc<[u8]>,
        save: bool,
    ) -> Result<(Arc<Tool>, bool), AddError> {
        let id = id_of(&bytes);
        if let Some(name) = &name {
            check_name(name).map_err(AddError::BadName)?;
        }
        self.with_id_locked(&id, self.add_locked(&id, name, limits, about, bytes, save)).await
    }

    /// Runs `f` holding the lock of tool `id`: adding and removing one tool never interleave,
    /// and two uploads of the same bytes load it once.
    async fn with_id_locked<T>(&self, id: &str, f: impl std::future::Future<Output = T>) -> T {
        let lock = {
            let mut locks = match self.id_locks.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            locks.entry(id.to_string()).or_default().clone()
        };
        let result = {
            let _one_at_a_time = lock.lock().await;
            f.await
        };
        if let Ok(mut locks) = self.id_locks.lock() {
            // The last one out removes the lock (a waiter still holding it keeps it alive).
            if Arc::strong_count(&lock) <= 2 {
                locks.remove(id);
            }
        }
        result
    }

    async fn add_locked(
        &self,
        id: &str,
        name: Option<String>,
        limits: super::api::Limits,
        about: About,
        bytes: Arc<[u8]>,
        save: bool,
    ) -> Result<(Arc<Tool>, bool), AddError> {
        if let Some(tool) = self.get(id) {
            return Ok((tool, false));
        }
        let Ok(_loading) = self.loads.try_acquire() else {
            return Err(AddError::Busy { loading: self.max_loads });
        };
        let place = self.take_place().ok_or(AddError::Full { max: self.max_tools })?;
        let name = name.unwrap_or_else(|| format!("tool-{}", &id[..12]));
        let (handle, kind, exports, scratch) =
            self.load_bytes(&name, bytes.clone()).await.map_err(AddError::Load)?;
        let meta = ToolMeta {
            id: id.to_string(),
            name,
            kind,
            exports,
            scratch,
            size: bytes.len() as u64,
            created: now_unix(),
            limits,
            about,
        };
        if !save {
            let tool = Arc::new(Tool { meta, handle });
            self.put(id, tool.clone());
            place.keep();
            return Ok((tool, true));
        }
        let dir = self.dir.clone();
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| AddError::Write { path: dir.clone(), source: std::io::Error::other(e) })?;
        let id_owned = id.to_string();
        let written = tokio::task::spawn_blocking(move || {
            let wasm = dir.join(format!("{id_owned}.wasm"));
            write_atomically(&wasm, &bytes)
                .map_err(|source| AddError::Write { path: wasm, source })?;
            let meta_path = dir.join(format!("{id_owned}.json"));
            write_atomically(&meta_path, &json)
                .map_err(|source| AddError::Write { path: meta_path, source })
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(join) => {
                return Err(AddError::Write {
                    path: self.dir.clone(),
                    source: std::io::Error::other(join.to_string()),
                });
            }
        }
        let tool = Arc::new(Tool { meta, handle });
        self.put(id, tool.clone());
        place.keep();
        Ok((tool, true))
    }

    pub fn get(&self, id: &str) -> Option<Arc<Tool>> {
        self.read_map().get(id).cloned()
    }

    /// Every tool, by name then id.
    pub fn list(&self) -> Vec<Arc<Tool>> {
        let mut tools: Vec<_> = self.read_map().values().cloned().collect();
        tools.sort_by(|a, b| (&a.meta.name, &a.meta.id).cmp(&(&b.meta.name, &b.meta.id)));
        tools
    }

    /// Removes a tool from service and from disk. Its zygote stops when the runs still using
    /// it have finished. `Ok(false)` if there was no such tool.
    pub async fn remove(&self, id: &str) -> std::io::Result<bool> {
        self.with_id_locked(id, self.remove_locked(id)).await
    }

    async fn remove_locked(&self, id: &str) -> std::io::Result<bool> {
        match self.write_map().remove(id) {
            Some(tool) => {
                drop(tool);
                self.places.fetch_sub(1, Ordering::AcqRel);
            }
            // A stored tool that never loaded holds no place; only its files go.
            None if self.write_unloaded().remove(id).is_some() => {}
            None => return Ok(false),
        }
        let dir = self.dir.clone();
        let id = id.to_string();
        let removed = tokio::task::spawn_blocking(move || {
            // Metadata first: a module without it is not a tool.
            for ext in ["json", "wasm"] {
                match std::fs::remove_file(dir.join(format!("{id}.{ext}"))) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await;
        match removed {
            Ok(r) => r.map(|()| true),
            Err(join) => Err(std::io::Error::other(join.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_uploader_says_about_a_tool() {
        let about = About::parse(Some("d".into()), Some(r#"{"type": "object"}"#)).unwrap();
        assert_eq!(about.description.as_deref(), Some("d"));
        assert!(about.input_schema.is_some());
        assert_eq!(About::parse(None, None).unwrap(), About::default());
        for bad in [r#"{"type": "string"}"#, "[]", "{", r#"{"properties": {}}"#] {
            assert!(About::parse(None, Some(bad)).is_err(), "{bad}");
        }
        assert!(About::parse(Some("x".repeat(MAX_DESCRIPTION_LEN + 1)), None).is_err());
        let huge =
            format!(r#"{{"type": "object", "description": "{}"}}"#, "x".repeat(MAX_SCHEMA_LEN));
        assert!(About::parse(None, Some(&huge)).is_err());
    }

    #[test]
    fn names_and_ids() {
        assert!(check_name("hello-1.0_x+y").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("../x").is_err());
        assert!(check_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
        let id = id_of(b"abc");
        assert_eq!(id, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(is_id(&id));
        assert!(!is_id(&id.to_uppercase()));
        assert!(!is_id("../../etc/passwd"));
    }
}
