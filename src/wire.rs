//! Frames between the zygote and a sandbox, each on a pipe of its own.
//!
//! - The child → zygote report: one length-prefixed frame (u32 little-endian length, then
//!   JSON). Never a sentinel in the guest's output streams.
//! - The host (or zygote) → waiting sandbox task, on the sandbox's channel: a header and the
//!   task's stdin, as
//!   `[u32 LE header length][u32 LE stdin length][header JSON][stdin bytes]`. Bytes travel
//!   as bytes, written straight from the task and read straight into the child's buffer;
//!   each part is at most [`MAX_REQUEST_BYTES`], the limit on a `worker` request line too.

use crate::outcome::Status;
use crate::task::MAX_REQUEST_BYTES;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;

/// Largest report accepted; a bigger length prefix means a corrupt frame.
pub(crate) const MAX_REPORT: usize = 64 << 20;

/// What the child knows when the guest is done.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChildReport {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub setup_us: u64,
    pub run_us: u64,
    pub fuel_consumed: Option<u64>,
    /// The child's peak resident set in bytes, measured just before reporting.
    #[serde(default)]
    pub peak_rss: u64,
    /// Files the task created or changed in its scratch directory (see [`crate::scratch`]).
    #[serde(default)]
    pub files: Vec<crate::scratch::ScratchFile>,
    /// Whether some were left out.
    #[serde(default)]
    pub files_truncated: bool,
}

/// A task handed to a waiting sandbox (host or zygote → child, on its channel), all but its
/// stdin, which follows the header as raw bytes. Borrowed from the task when encoded, owned
/// when decoded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct TaskHeader<'a> {
    pub argv0: Option<Cow<'a, str>>,
    pub args: Cow<'a, [String]>,
    pub env: Cow<'a, [(String, String)]>,
    /// The sandbox's fd 0 is the task's stdin (passed by the host); no stdin bytes follow.
    #[serde(default)]
    pub inherit_stdin: bool,
    pub preopens: Cow<'a, [crate::child::Preopen]>,
    pub max_memory: Option<usize>,
    pub fuel: Option<u64>,
    pub max_write: Option<u64>,
    pub max_files: Option<u64>,
    /// The task's whole timeout (for messages) and what is left of it at hand-over.
    pub timeout_us: Option<u64>,
    pub remaining_us: Option<u64>,
    /// The export to call instead of `_start`.
    #[serde(default)]
    pub invoke: Option<Cow<'a, str>>,
    /// Files for the scratch directory, and what comes back from it.
    #[serde(default)]
    pub files: Cow<'a, [crate::scratch::ScratchFile]>,
    #[serde(default)]
    pub files_out: Option<crate::scratch::FilesOut>,
    /// A component export's JSON arguments.
    #[serde(default)]
    pub arguments: Option<Cow<'a, serde_json::Value>>,
}

/// Why a task frame cannot be built or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TaskFrameError {
    #[error("task {part} of {len} bytes exceeds the limit of {MAX_REQUEST_BYTES} bytes")]
    TooLarge { part: &'static str, len: usize },
    #[error("cannot encode the task header")]
    Encode(#[source] serde_json::Error),
    #[error("malformed task header")]
    Decode(#[source] serde_json::Error),
    #[error("task channel closed in the middle of a frame")]
    Truncated,
    #[error("cannot read the task channel")]
    Read(#[source] std::io::Error),
}

/// The part of a task frame that precedes stdin: both lengths, then the header. The caller
/// writes `stdin` right after it.
pub(crate) fn encode_task(header: &TaskHeader, stdin: &[u8]) -> Result<Vec<u8>, TaskFrameError> {
    let body = serde_json::to_vec(header).map_err(TaskFrameError::Encode)?;
    let head_len = part_len("header", body.len())?;
    let stdin_len = part_len("stdin", stdin.len())?;
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&head_len.to_le_bytes());
    frame.extend_from_slice(&stdin_len.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// A part's length as sent, if within [`MAX_REQUEST_BYTES`].
fn part_len(part: &'static str, len: usize) -> Result<u32, TaskFrameError> {
    u32::try_from(len)
        .ok()
        .filter(|_| len <= MAX_REQUEST_BYTES)
        .ok_or(TaskFrameError::TooLarge { part, len })
}

/// Reads one task frame with `read` (a `read(2)`: `Ok(0)` at end of file). `Ok(None)` when
/// the channel closes before the first byte (the zygote is shutting down). Each part is read
/// into a buffer of exactly its checked length.
pub(crate) fn read_task(
    mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
) -> Result<Option<(TaskHeader<'static>, Vec<u8>)>, TaskFrameError> {
    let mut lens = [0u8; 8];
    let mut fill = |buf: &mut [u8]| -> Result<usize, TaskFrameError> {
        let mut got = 0;
        while got < buf.len() {
            match read(&mut buf[got..]).map_err(TaskFrameError::Read)? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    };
    match fill(&mut lens)? {
        0 => return Ok(None),
        8 => {}
        _ => return Err(TaskFrameError::Truncated),
    }
    let part = |part, bytes: [u8; 4]| -> Result<usize, TaskFrameError> {
        let len = usize::try_from(u32::from_le_bytes(bytes))
            .map_err(|_| TaskFrameError::TooLarge { part, len: usize::MAX })?;
        if len > MAX_REQUEST_BYTES {
            return Err(TaskFrameError::TooLarge { part, len });
        }
        Ok(len)
    };
    let head_len = part("header", [lens[0], lens[1], lens[2], lens[3]])?;
    let stdin_len = part("stdin", [lens[4], lens[5], lens[6], lens[7]])?;
    let mut head = vec![0u8; head_len];
    let mut stdin = vec![0u8; stdin_len];
    if fill(&mut head)? != head_len || fill(&mut stdin)? != stdin_len {
        return Err(TaskFrameError::Truncated);
    }
    let header = serde_json::from_slice(&head).map_err(TaskFrameError::Decode)?;
    Ok(Some((header, stdin)))
}

/// Encodes a message as one frame.
pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; fall back to an empty object if it ever did.
    let mut body = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    // A report is a few hundred bytes; should one ever not fit, send the empty object (which
    // the zygote reports as corrupt) rather than a wrapped length.
    let len = match u32::try_from(body.len()) {
        Ok(len) if body.len() <= MAX_REPORT => len,
        _ => {
            body = b"{}".to_vec();
            2
        }
    };
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Accumulates bytes from a pipe until a whole frame has arrived.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
}

/// Result of feeding bytes to a [`FrameReader`].
#[derive(Debug)]
pub(crate) enum Frame<T> {
    /// More bytes needed.
    Partial,
    /// A complete, decoded message.
    Complete(T),
    /// The frame is malformed.
    Corrupt(String),
}

impl FrameReader {
    pub(crate) fn push<T: DeserializeOwned>(&mut self, bytes: &[u8]) -> Frame<T> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() < 4 {
            return Frame::Partial;
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = match usize::try_from(len) {
            Ok(len) if len <= MAX_REPORT => len,
            _ => {
                return Frame::Corrupt(format!("report frame of {len} bytes exceeds {MAX_REPORT}"));
            }
        };
        if self.buf.len() < 4 + len {
            return Frame::Partial;
        }
        match serde_json::from_slice(&self.buf[4..4 + len]) {
            Ok(r) => Frame::Complete(r),
            Err(e) => Frame::Corrupt(format!("malformed report frame: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ChildReport {
        ChildReport {
            status: Status::Exited,
            exit_code: Some(3),
            message: None,
            setup_us: 1,
            run_us: 2,
            fuel_consumed: None,
            peak_rss: 0,
            files: Vec::new(),
            files_truncated: false,
        }
    }

    #[test]
    fn frame_round_trips_byte_by_byte() {
        let frame = encode(&report());
        let mut r = FrameReader::default();
        for (i, b) in frame.iter().enumerate() {
            match r.push::<ChildReport>(std::slice::from_ref(b)) {
                Frame::Partial => assert!(i + 1 < frame.len(), "complete frame reported partial"),
                Frame::Complete(got) => {
                    assert_eq!(i + 1, frame.len(), "frame completed early");
                    assert_eq!(got.exit_code, Some(3));
                    assert_eq!(got.status, Status::Exited);
                }
                Frame::Corrupt(e) => panic!("corrupt: {e}"),
            }
        }
    }

    #[test]
    fn oversized_length_is_corrupt() {
        let mut r = FrameReader::default();
        assert!(matches!(r.push::<ChildReport>(&u32::MAX.to_le_bytes()), Frame::Corrupt(_)));
    }

    fn header() -> TaskHeader<'static> {
        TaskHeader {
            argv0: Some("tool".into()),
            args: vec!["a".to_string(), "\u{0}x".to_string()].into(),
            env: vec![("K".to_string(), "V".to_string())].into(),
            inherit_stdin: false,
            preopens: Vec::new().into(),
            max_memory: Some(1 << 20),
            fuel: None,
            max_write: None,
            max_files: None,
            timeout_us: Some(5),
            remaining_us: Some(4),
            invoke: Some("add".into()),
            files: Vec::new().into(),
            files_out: None,
            arguments: None,
        }
    }

    /// A `read(2)` over `bytes`, at most `step` bytes per call.
    fn reader(bytes: &[u8], step: usize) -> impl FnMut(&mut [u8]) -> std::io::Result<usize> + '_ {
        let mut at = 0;
        move |buf: &mut [u8]| {
            let n = buf.len().min(step).min(bytes.len() - at);
            buf[..n].copy_from_slice(&bytes[at..at + n]);
            at += n;
            Ok(n)
        }
    }

    #[test]
    fn task_frame_round_trips_with_raw_stdin() {
        let stdin: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut frame = encode_task(&header(), &stdin).unwrap();
        frame.extend_from_slice(&stdin);
        for step in [1, 7, 4096, usize::MAX] {
            let (h, got) = read_task(reader(&frame, step)).unwrap().expect("a frame");
            assert_eq!(got, stdin);
            assert_eq!(h.args[1], "\u{0}x");
            assert_eq!(h.argv0.as_deref(), Some("tool"));
            assert_eq!(h.remaining_us, Some(4));
        }
    }

    #[test]
    fn task_frame_end_of_file_and_truncation() {
        assert!(read_task(reader(b"", 1)).unwrap().is_none());
        let mut frame = encode_task(&header(), b"abc").unwrap();
        frame.extend_from_slice(b"ab");
        assert!(matches!(read_task(reader(&frame, 3)), Err(TaskFrameError::Truncated)));
        assert!(matches!(read_task(reader(&frame[..5], 3)), Err(TaskFrameError::Truncated)));
    }

    #[test]
    fn task_frame_parts_are_bounded() {
        let big = u32::try_from(MAX_REQUEST_BYTES + 1).unwrap().to_le_bytes();
        let mut frame = 2u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&big);
        assert!(matches!(
            read_task(reader(&frame, 8)),
            Err(TaskFrameError::TooLarge { part: "stdin", .. })
        ));
        let mut frame = big.to_vec();
        frame.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            read_task(reader(&frame, 8)),
            Err(TaskFrameError::TooLarge { part: "header", .. })
        ));
        let stdin = vec![0u8; MAX_REQUEST_BYTES + 1];
        assert!(matches!(
            encode_task(&header(), &stdin),
            Err(TaskFrameError::TooLarge { part: "stdin", .. })
        ));
    }

    #[test]
    fn garbage_body_is_corrupt() {
        let mut r = FrameReader::default();
        let mut f = 3u32.to_le_bytes().to_vec();
        f.extend_from_slice(b"{{{");
        assert!(matches!(r.push::<ChildReport>(&f), Frame::Corrupt(_)));
    }
}
