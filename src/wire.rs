//! The child → zygote report: one length-prefixed frame (u32 little-endian length, then JSON),
//! on a pipe of its own. Never a sentinel in the guest's output streams.

use crate::outcome::Status;

/// Largest report accepted; a bigger length prefix means a corrupt frame.
pub(crate) const MAX_FRAME: usize = 1 << 20;

/// What the child knows when the guest is done.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChildReport {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub setup_us: u64,
    pub run_us: u64,
    pub fuel_consumed: Option<u64>,
}

/// Encodes a report as one frame.
pub(crate) fn encode(report: &ChildReport) -> Vec<u8> {
    // Serialising this plain struct cannot fail; fall back to an empty object if it ever did.
    let body = serde_json::to_vec(report).unwrap_or_else(|_| b"{}".to_vec());
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Accumulates bytes from the report pipe until a whole frame has arrived.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
}

/// Result of feeding bytes to a [`FrameReader`].
#[derive(Debug)]
pub(crate) enum Frame {
    /// More bytes needed.
    Partial,
    /// A complete, decoded report.
    Complete(ChildReport),
    /// The frame is malformed.
    Corrupt(String),
}

impl FrameReader {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Frame {
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
        }
    }

    #[test]
    fn frame_round_trips_byte_by_byte() {
        let frame = encode(&report());
        let mut r = FrameReader::default();
        for (i, b) in frame.iter().enumerate() {
            match r.push(std::slice::from_ref(b)) {
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
        assert!(matches!(r.push(&u32::MAX.to_le_bytes()), Frame::Corrupt(_)));
    }

    #[test]
    fn garbage_body_is_corrupt() {
        let mut r = FrameReader::default();
        let mut f = 3u32.to_le_bytes().to_vec();
        f.extend_from_slice(b"{{{");
        assert!(matches!(r.push(&f), Frame::Corrupt(_)));
    }
}
