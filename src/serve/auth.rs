//! API keys: read from a file, kept only as SHA-256 hashes, compared in constant time; and the
//! per-key quota of runs in flight.

use super::AppState;
use super::api::ApiError;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use subtle::ConstantTimeEq;

/// Shortest key accepted: a shorter one is too easy to guess.
pub const MIN_KEY_LEN: usize = 16;
/// Longest key accepted (a longer line is more likely a mistake than a key).
pub const MAX_KEY_LEN: usize = 1024;

/// The keys a server accepts, as SHA-256 hashes: the keys themselves are not kept.
#[derive(Clone)]
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.hashes.len())
    }
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read the API key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line holds a key that is too short or too long.
    #[error(
        "API key file {path}, line {line}: a key of {len} characters; keys must have {MIN_KEY_LEN} to {MAX_KEY_LEN}"
    )]
    BadLength { path: PathBuf, line: usize, len: usize },
    /// A line holds whitespace or control characters inside the key.
    #[error(
        "API key file {path}, line {line}: a key may not hold spaces or control characters (one key per line; comments start with #)"
    )]
    BadCharacter { path: PathBuf, line: usize },
    /// The file holds no key at all.
    #[error(
        "API key file {path} holds no key (one key per line; blank lines and # comments are allowed)"
    )]
    Empty { path: PathBuf },
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Reads a key file: one key per line; blank lines and lines starting with `#` are
    /// ignored; surrounding whitespace is trimmed.
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyFileError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a key file (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyFileError> {
        let mut hashes = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            let line = i + 1;
            if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(KeyFileError::BadCharacter { path: path.to_path_buf(), line });
            }
            let len = key.chars().count();
            if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&len) {
                return Err(KeyFileError::BadLength { path: path.to_path_buf(), line, len });
            }
            hashes.push(hash(key));
        }
        if hashes.is_empty() {
            return Err(KeyFileError::Empty { path: path.to_path_buf() });
        }
        Ok(Self { hashes })
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether there are none (never, for keys read by [`ApiKeys::from_file`]).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The index of the key `presented` is, if any. Its hash is compared with every stored
    /// hash, each comparison in constant time, and all of them are made whatever matched.
    pub fn find(&self, presented: &str) -> Option<usize> {
        let h = hash(presented);
        let mut found = None;
        for (i, stored) in self.hashes.iter().enumerate() {
            let equal: bool = h.ct_eq(stored).into();
            if equal && found.is_none() {
                found = Some(i);
            }
        }
        found
    }
}

/// Who made a request: the index of its key, or nobody (a server without keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Key(usize),
    Anonymous,
}

/// Who sent these headers: `Ok(caller)`, or the 401 to answer when the server has keys and
/// the request carries none of them.
pub(crate) fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(keys) = &state.keys else { return Ok(Caller::Anonymous) };
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| {
            ApiError::unauthorized("missing API key: send `Authorization: Bearer <key>`")
        })?;
    keys.find(token).map(Caller::Key).ok_or_else(|| ApiError::unauthorized("invalid API key"))
}

/// Requires `Authorization: Bearer <key>` with a known key when the server has keys, and
/// records the caller for the quota.
pub(crate) async fn require_key(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    match caller(&state, req.headers()) {
        Ok(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The slot of `caller` among `keys` keys' slots and one more: the anonymous caller of a
/// server without keys (`--no-auth`, or `mcp` on stdio) counts as one key of its own.
fn slot(caller: Caller, keys: usize) -> usize {
    match caller {
        Caller::Key(i) => i,
        Caller::Anonymous => keys,
    }
}

/// Runs in flight (or waiting) per key; past the limit, a key's requests get 429 while
/// others' are still served. Batch items count one each.
#[derive(Debug)]
pub(crate) struct Quotas {
    limit: Option<usize>,
    counts: Vec<AtomicUsize>,
}

impl Quotas {
    /// `limit` per key (`None`: no per-key limit) for `keys` keys.
    pub fn new(limit: Option<usize>, keys: usize) -> Arc<Self> {
        Arc::new(Self { limit, counts: (0..=keys).map(|_| AtomicUsize::new(0)).collect() })
    }

    /// Takes `n` of `caller`'s quota, or says how many it has in flight.
    pub fn take(self: &Arc<Self>, caller: Caller, n: usize) -> Result<QuotaGuard, usize> {
        let Some(limit) = self.limit else {
            return Ok(QuotaGuard { quotas: None, index: 0, n: 0 });
        };
        let i = slot(caller, self.counts.len() - 1);
        let Some(count) = self.counts.get(i) else {
            return Ok(QuotaGuard { quotas: None, index: 0, n: 0 });
        };
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                c.checked_add(n).filter(|&t| t <= limit)
            })
            .map(|_| QuotaGuard { quotas: Some(self.clone()), index: i, n })
    }
}

/// A per-key rate limit: a token bucket per key, refilled at `per_second` up to `burst`;
/// each run (each batch item) takes one token. Past it, 429 with the wait in Retry-After.
#[derive(Debug)]
pub(crate) struct Rates {
    limit: Option<RateLimit>,
    buckets: Vec<std::sync::Mutex<Bucket>>,
}

/// Runs per second per API key, and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl Rates {
    pub fn new(limit: Option<RateLimit>, keys: usize) -> Self {
        let now = std::time::Instant::now();
        let full = limit.map_or(0.0, |l| f64::from(l.burst.max(1)));
        Self {
            limit,
            buckets: (0..=keys)
                .map(|_| std::sync::Mutex::new(Bucket { tokens: full, at: now }))
                .collect(),
        }
    }

    /// The rate, for messages.
    pub fn per_second(&self) -> f64 {
        self.limit.map_or(0.0, |l| l.per_second)
    }

    /// Takes `n` tokens of `caller`'s bucket, or says how long until there would be enough
    /// (a batch larger than the burst never fits: the wait is then the time to a full bucket).
    pub fn take(&self, caller: Caller, n: usize) -> Result<(), std::time::Duration> {
        let Some(limit) = self.limit else { return Ok(()) };
        let i = slot(caller, self.buckets.len() - 1);
        let Some(bucket) = self.buckets.get(i) else { return Ok(()) };
        let mut b = match bucket.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let burst = f64::from(limit.burst.max(1));
        let rate = limit.per_second.max(f64::MIN_POSITIVE);
        let now = std::time::Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        let want = n as f64;
        if b.tokens >= want {
            b.tokens -= want;
            return Ok(());
        }
        let missing = want.min(burst) - b.tokens;
        Err(std::time::Duration::try_from_secs_f64(missing / rate)
            .unwrap_or(std::time::Duration::from_secs(3600)))
    }
}

/// Gives back the quota it holds when dropped.
#[derive(Debug)]
pub(crate) struct QuotaGuard {
    quotas: Option<Arc<Quotas>>,
    index: usize,
    n: usize,
}

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        if let Some(q) = &self.quotas
            && let Some(c) = q.counts.get(self.index)
        {
            c.fetch_sub(self.n, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files() {
        let p = Path::new("keys");
        let keys =
            ApiKeys::parse("# ops\n\n  aaaaaaaaaaaaaaaa  \nbbbbbbbbbbbbbbbbbbbb\n", p).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.find("aaaaaaaaaaaaaaaa"), Some(0));
        assert_eq!(keys.find("bbbbbbbbbbbbbbbbbbbb"), Some(1));
        assert_eq!(keys.find("aaaaaaaaaaaaaaa"), None);
        assert!(matches!(
            ApiKeys::parse("short\n", p),
            Err(KeyFileError::BadLength { line: 1, len: 5, .. })
        ));
        assert!(matches!(
            ApiKeys::parse("#c\naaaaaaaa aaaaaaaaaa\n", p),
            Err(KeyFileError::BadCharacter { line: 2, .. })
        ));
        assert!(matches!(ApiKeys::parse("# nothing\n\n", p), Err(KeyFileError::Empty { .. })));
    }

    #[test]
    fn rates_refill_per_key_up_to_the_burst() {
        let r = Rates::new(Some(RateLimit { per_second: 10.0, burst: 3 }), 2);
        assert!(r.take(Caller::Key(0), 2).is_ok());
        assert!(r.take(Caller::Key(0), 1).is_ok());
        let wait = r.take(Caller::Key(0), 1).unwrap_err();
        assert!(wait <= std::time::Duration::from_millis(100), "{wait:?}");
        assert!(r.take(Caller::Key(1), 3).is_ok(), "another key has its own bucket");
        assert!(r.take(Caller::Key(1), 4).is_err(), "a batch larger than the burst");
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!(r.take(Caller::Key(0), 1).is_ok(), "refilled");
        assert!(Rates::new(None, 1).take(Caller::Key(0), 100).is_ok());
        // Without keys, every caller is the one anonymous caller, with a bucket of its own.
        let open = Rates::new(Some(RateLimit { per_second: 10.0, burst: 2 }), 0);
        assert!(open.take(Caller::Anonymous, 2).is_ok());
        assert!(open.take(Caller::Anonymous, 1).is_err(), "the anonymous caller is limited");
    }

    #[test]
    fn quotas_count_per_key() {
        let q = Quotas::new(Some(2), 2);
        let a = q.take(Caller::Key(0), 2).unwrap();
        assert!(q.take(Caller::Key(0), 1).is_err());
        assert!(q.take(Caller::Key(1), 2).is_ok(), "another key has its own quota");
        drop(a);
        assert!(q.take(Caller::Key(0), 1).is_ok());
        assert!(q.take(Caller::Key(0), 3).is_err(), "a batch larger than the quota");
        assert!(Quotas::new(None, 1).take(Caller::Key(0), 100).is_ok());
        let open = Quotas::new(Some(1), 0);
        let held = open.take(Caller::Anonymous, 1).unwrap();
        assert!(open.take(Caller::Anonymous, 1).is_err(), "the anonymous caller has a quota");
        drop(held);
        assert!(open.take(Caller::Anonymous, 1).is_ok());
    }
}
