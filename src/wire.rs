//! The child → zygote report: one length-prefixed frame (u32 little-endian length, then JSON),
//! on a pipe of its own. Never a sentinel in the guest's output streams.

use crate::outcome::Status;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest report accepted; a bigger length prefix means a corrupt frame.
pub(crate) const MAX_FRAME: usize = 64 << 20;

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
}

/// A task handed to a pre-forked child (zygote → child, on the child's fd 0).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct TaskFrame {
    pub argv0: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    /// The sandbox's fd 0 is the task's stdin (passed by the host), not `stdin`'s bytes.
    #[serde(default)]
    pub inherit_stdin: bool,
    pub preopens: Vec<crate::child::Preopen>,
    pub max_memory: Option<usize>,
    pub fuel: Option<u64>,
    pub max_write: Option<u64>,
    pub max_files: Option<u64>,
    /// The task's whole timeout (for messages) and what is left of it at hand-over.
    pub timeout_us: Option<u64>,
    pub remaining_us: Option<u64>,
}

/// Encodes a message as one frame.
pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; fall back to an empty object if it ever did.
    let body = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
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
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Frame::Corrupt(format!("report frame of {len} bytes exceeds {MAX_FRAME}"));
        }
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

    #[test]
    fn garbage_body_is_corrupt() {
        let mut r = FrameReader::default();
        let mut f = 3u32.to_le_bytes().to_vec();
        f.extend_from_slice(b"{{{");
        assert!(matches!(r.push::<ChildReport>(&f), Frame::Corrupt(_)));
    }
}
