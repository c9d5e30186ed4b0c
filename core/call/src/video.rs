//! Video for calls: VP8 frames, encoded and decoded by the platform. The core only carries
//! them — packetizes on the way out, reassembles whole frames on the way in — plus an IVF
//! reader so the CLI and the tests have real frames to send.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// VP8's RTP clock (RFC 7741).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

/// A frame claiming more than this is a corrupt file or a hostile peer, not video we can
/// show: 4K keyframes stay well below it.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("cannot read IVF file: {0}")]
    Io(String),
    #[error("not an IVF file: {0}")]
    NotIvf(String),
    #[error("unsupported IVF codec {0:?} (only VP8, \"VP80\", is carried)")]
    Codec(String),
    #[error("truncated IVF file: {0}")]
    Truncated(String),
    #[error("corrupt IVF file: {0}")]
    Corrupt(String),
}

/// Where outgoing video comes from: the platform's VP8 encoder, an IVF file here.
pub trait VideoSource: Send {
    /// The next encoded VP8 frame and how long it is shown; `None` when no frame is ready
    /// (the sender asks again shortly) or the source has ended.
    fn next_frame(&mut self) -> Option<(Vec<u8>, Duration)>;
}

/// Where received video goes: one complete VP8 frame at a time, for the platform decoder.
pub trait VideoSink: Send {
    fn frame(&mut self, vp8_frame: &[u8]);
}

/// One frame read from an IVF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfFrame {
    pub data: Vec<u8>,
    /// Presentation time in the file's timebase.
    pub pts: u64,
    pub duration: Duration,
}

/// IVF header fields that matter to a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfHeader {
    pub width: u16,
    pub height: u16,
    pub timebase_num: u32,
    pub timebase_den: u32,
    pub frame_count: u32,
}

/// Reads a VP8 IVF file frame by frame. Frame durations come from the gap to the next
/// frame's timestamp (the file has no per-frame duration), hence one frame of look-ahead.
pub struct IvfReader<R: Read> {
    reader: R,
    header: IvfHeader,
    /// The frame after the one last returned, or the error reading it, which is reported
    /// in its turn so every good frame before a corruption is still delivered.
    pending: Option<Result<(Vec<u8>, u64), VideoError>>,
    last_duration: Duration,
    done: bool,
    index: u64,
}

impl IvfReader<BufReader<File>> {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, VideoError> {
        let file = File::open(path.as_ref()).map_err(|e| VideoError::Io(e.to_string()))?;
        Self::new(BufReader::new(file))
    }

    /// Reads a whole file: the frames and their durations, or the first error.
    pub fn read_all(path: impl AsRef<Path>) -> Result<Vec<IvfFrame>, VideoError> {
        let mut r = Self::open(path)?;
        let mut frames = Vec::new();
        while let Some(f) = r.read_frame()? {
            frames.push(f);
        }
        Ok(frames)
    }
}

impl<R: Read> IvfReader<R> {
    pub fn new(mut reader: R) -> Result<Self, VideoError> {
        let mut h = [0u8; 32];
        read_exact_or(&mut reader, &mut h, "the 32-byte file header")?;
        if &h[0..4] != b"DKIF" {
            return Err(VideoError::NotIvf("missing \"DKIF\" signature".into()));
        }
        let header_len = u16::from_le_bytes([h[6], h[7]]);
        if header_len < 32 {
            return Err(VideoError::NotIvf(format!(
                "header length {header_len} < 32"
            )));
        }
        let fourcc = &h[8..12];
        if fourcc != b"VP80" {
            return Err(VideoError::Codec(
                String::from_utf8_lossy(fourcc).into_owned(),
            ));
        }
        let header = IvfHeader {
            width: u16::from_le_bytes([h[12], h[13]]),
            height: u16::from_le_bytes([h[14], h[15]]),
            // The spec names the order "rate, scale": time base = scale / rate seconds.
            timebase_den: u32::from_le_bytes([h[16], h[17], h[18], h[19]]),
            timebase_num: u32::from_le_bytes([h[20], h[21], h[22], h[23]]),
            frame_count: u32::from_le_bytes([h[24], h[25], h[26], h[27]]),
        };
        if header.timebase_den == 0 || header.timebase_num == 0 {
            return Err(VideoError::Corrupt("zero time base".into()));
        }
        // Longer headers are allowed by the format; skip what we do not know.
        let extra = u64::from(header_len - 32);
        if extra > 0 {
            let copied = std::io::copy(&mut (&mut reader).take(extra), &mut std::io::sink())
                .map_err(|e| VideoError::Io(e.to_string()))?;
            if copied < extra {
                return Err(VideoError::Truncated("inside the file header".into()));
            }
        }
        let mut me = Self {
            reader,
            last_duration: Duration::ZERO,
            header,
            pending: None,
            done: false,
            index: 0,
        };
        me.last_duration = me.ticks_to_duration(1);
        me.pending = me.read_raw().transpose();
        Ok(me)
    }

    pub fn header(&self) -> &IvfHeader {
        &self.header
    }

    fn ticks_to_duration(&self, ticks: u64) -> Duration {
        let secs = ticks as f64 * f64::from(self.header.timebase_num)
            / f64::from(self.header.timebase_den);
        // A frame shown under a millisecond or over ten seconds is a timestamp glitch; clamp
        // so the sender neither floods nor stalls.
        Duration::from_secs_f64(secs.clamp(0.001, 10.0))
    }

    fn read_raw(&mut self) -> Result<Option<(Vec<u8>, u64)>, VideoError> {
        if self.done {
            return Ok(None);
        }
        let mut fh = [0u8; 12];
        let n = read_full(&mut self.reader, &mut fh)?;
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        let index = self.index;
        if n < fh.len() {
            self.done = true;
            return Err(VideoError::Truncated(format!(
                "frame {index}: header has {n} of 12 bytes"
            )));
        }
        let size = u32::from_le_bytes([fh[0], fh[1], fh[2], fh[3]]) as usize;
        let pts = u64::from_le_bytes([fh[4], fh[5], fh[6], fh[7], fh[8], fh[9], fh[10], fh[11]]);
        if size == 0 || size > MAX_FRAME_BYTES {
            self.done = true;
            return Err(VideoError::Corrupt(format!(
                "frame {index}: size {size} bytes (allowed 1..={MAX_FRAME_BYTES})"
            )));
        }
        let mut data = vec![0u8; size];
        let got = read_full(&mut self.reader, &mut data)?;
        if got < size {
            self.done = true;
            return Err(VideoError::Truncated(format!(
                "frame {index}: {got} of {size} bytes"
            )));
        }
        self.index += 1;
        Ok(Some((data, pts)))
    }

    /// The next frame, `Ok(None)` at the end of the file.
    pub fn read_frame(&mut self) -> Result<Option<IvfFrame>, VideoError> {
        let (data, pts) = match self.pending.take() {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(f)) => f,
        };
        self.pending = self.read_raw().transpose();
        let duration = match &self.pending {
            Some(Ok((_, next))) if *next > pts => self.ticks_to_duration(next - pts),
            _ => self.last_duration,
        };
        self.last_duration = duration;
        Ok(Some(IvfFrame {
            data,
            pts,
            duration,
        }))
    }
}

impl<R: Read + Send> VideoSource for IvfReader<R> {
    fn next_frame(&mut self) -> Option<(Vec<u8>, Duration)> {
        match self.read_frame() {
            Ok(f) => f.map(|f| (f.data, f.duration)),
            Err(e) => {
                tracing::warn!("IVF source ended: {e}");
                None
            }
        }
    }
}

/// Frames decoded in advance, e.g. from [`IvfReader::read_all`], sent in order.
pub struct FrameList {
    frames: std::collections::VecDeque<(Vec<u8>, Duration)>,
}

impl FrameList {
    pub fn new(frames: impl IntoIterator<Item = (Vec<u8>, Duration)>) -> Self {
        Self {
            frames: frames.into_iter().collect(),
        }
    }
}

impl VideoSource for FrameList {
    fn next_frame(&mut self) -> Option<(Vec<u8>, Duration)> {
        self.frames.pop_front()
    }
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), VideoError> {
    let n = read_full(r, buf)?;
    if n < buf.len() {
        return Err(VideoError::Truncated(format!(
            "{what}: {n} of {} bytes",
            buf.len()
        )));
    }
    Ok(())
}

/// Like `read_exact`, but says how far it got instead of failing on a short file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, VideoError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(VideoError::Io(e.to_string())),
        }
    }
    Ok(n)
}

/// SHA-256 of a frame, lowercase hex: frames are compared by hash across the call.
pub fn frame_sha256(frame: &[u8]) -> String {
    hex::encode(Sha256::digest(frame))
}

/// Collects received frames (tests, thumbnails). A handle: clones share the list.
#[derive(Clone, Default)]
pub struct FrameCollector {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl FrameCollector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn frames(&self) -> Vec<Vec<u8>> {
        match self.frames.lock() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.frames.lock().map(|f| f.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SHA-256 (hex) of every frame received, in order.
    pub fn hashes(&self) -> Vec<String> {
        self.frames().iter().map(|f| frame_sha256(f)).collect()
    }
}

impl VideoSink for FrameCollector {
    fn frame(&mut self, vp8_frame: &[u8]) {
        if let Ok(mut f) = self.frames.lock() {
            f.push(vp8_frame.to_vec());
        }
    }
}

/// Strips the VP8 payload descriptor (RFC 7741 §4.2) and returns `(start_of_frame,
/// payload)`. `start_of_frame` is S=1 with partition index 0: the first packet of a frame.
pub(crate) fn vp8_payload(p: &[u8]) -> Option<(bool, &[u8])> {
    let first = *p.first()?;
    let x = first & 0x80 != 0;
    let s = first & 0x10 != 0;
    let pid = first & 0x07;
    let mut i = 1;
    if x {
        let ext = *p.get(i)?;
        i += 1;
        let (has_i, has_l, has_t, has_k) = (
            ext & 0x80 != 0,
            ext & 0x40 != 0,
            ext & 0x20 != 0,
            ext & 0x10 != 0,
        );
        if has_i {
            let m = *p.get(i)? & 0x80 != 0;
            i += if m { 2 } else { 1 };
        }
        if has_l {
            i += 1;
        }
        if has_t || has_k {
            i += 1;
        }
    }
    let payload = p.get(i..)?;
    if payload.is_empty() {
        return None;
    }
    Some((s && pid == 0, payload))
}

/// Reassembles VP8 frames from in-order RTP packets. A frame is delivered only when every
/// packet from its first (S bit) to its last (marker bit) arrived, so a frame with a hole is
/// dropped rather than handed to the decoder corrupt.
#[derive(Default)]
pub(crate) struct Vp8Assembler {
    frame: Vec<u8>,
    timestamp: u32,
    /// Whether `frame` holds a frame from its first packet without holes so far.
    intact: bool,
    pub(crate) dropped: u64,
}

impl Vp8Assembler {
    /// Feeds one packet; `gap_before` says packets were lost just before this one.
    pub(crate) fn push(
        &mut self,
        payload: &[u8],
        timestamp: u32,
        marker: bool,
        gap_before: bool,
    ) -> Option<Vec<u8>> {
        let Some((start, data)) = vp8_payload(payload) else {
            self.abandon();
            return None;
        };
        if start {
            if self.intact && !self.frame.is_empty() {
                // A new frame began before the last one's marker: the end of that one was lost.
                self.dropped += 1;
            }
            self.frame.clear();
            self.timestamp = timestamp;
            self.intact = true;
        } else if gap_before || timestamp != self.timestamp {
            self.abandon();
        }
        if !self.intact {
            return None;
        }
        if self.frame.len() + data.len() > MAX_FRAME_BYTES {
            self.abandon();
            return None;
        }
        self.frame.extend_from_slice(data);
        if marker {
            self.intact = false;
            return Some(std::mem::take(&mut self.frame));
        }
        None
    }

    fn abandon(&mut self) {
        if self.intact {
            self.dropped += 1;
        }
        self.intact = false;
        self.frame.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ivf(frames: &[(&[u8], u64)], den: u32, num: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"DKIF");
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&32u16.to_le_bytes());
        v.extend_from_slice(b"VP80");
        v.extend_from_slice(&320u16.to_le_bytes());
        v.extend_from_slice(&240u16.to_le_bytes());
        v.extend_from_slice(&den.to_le_bytes());
        v.extend_from_slice(&num.to_le_bytes());
        v.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        for (data, pts) in frames {
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&pts.to_le_bytes());
            v.extend_from_slice(data);
        }
        v
    }

    #[test]
    fn ivf_parse() {
        let bytes = ivf(&[(b"abc", 0), (b"defg", 2), (b"h", 3)], 30, 1);
        let mut r = IvfReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().width, 320);
        assert_eq!(r.header().frame_count, 3);
        let f0 = r.read_frame().unwrap().unwrap();
        assert_eq!(f0.data, b"abc");
        assert_eq!(f0.duration, Duration::from_secs_f64(2.0 / 30.0));
        let f1 = r.read_frame().unwrap().unwrap();
        assert_eq!(f1.duration, Duration::from_secs_f64(1.0 / 30.0));
        let f2 = r.read_frame().unwrap().unwrap();
        assert_eq!((f2.data.as_slice(), f2.duration), (&b"h"[..], f1.duration));
        assert!(r.read_frame().unwrap().is_none());
    }

    #[test]
    fn ivf_truncated_and_malformed() {
        let bytes = ivf(&[(b"abcdef", 0), (b"ghijkl", 1)], 30, 1);
        // Cut inside the second frame's payload: the first frame is still readable, then a
        // clear error, then the end.
        let cut = &bytes[..bytes.len() - 3];
        let mut r = IvfReader::new(cut).unwrap();
        assert_eq!(r.read_frame().unwrap().unwrap().data, b"abcdef");
        let err = r.read_frame().unwrap_err();
        assert!(r.read_frame().unwrap().is_none());
        assert!(
            matches!(err, VideoError::Truncated(_)) && err.to_string().contains("3 of 6 bytes"),
            "{err}"
        );
        // Cut inside a frame header.
        let err = IvfReader::new(&bytes[..32 + 5])
            .unwrap()
            .read_frame()
            .unwrap_err();
        assert!(
            err.to_string().contains("header has 5 of 12 bytes"),
            "{err}"
        );
        // Short file header, wrong magic, wrong codec, absurd size.
        assert!(matches!(
            IvfReader::new(&bytes[..10]).err().unwrap(),
            VideoError::Truncated(_)
        ));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            IvfReader::new(&bad[..]).err().unwrap(),
            VideoError::NotIvf(_)
        ));
        let mut vp9 = bytes.clone();
        vp9[8..12].copy_from_slice(b"VP90");
        let err = IvfReader::new(&vp9[..]).err().unwrap();
        assert!(err.to_string().contains("VP90"), "{err}");
        let mut huge = bytes.clone();
        huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = IvfReader::new(&huge[..]).unwrap().read_frame().unwrap_err();
        assert!(matches!(err, VideoError::Corrupt(_)), "{err}");
        assert!(IvfReader::open("/nonexistent/x.ivf").is_err());
    }

    #[test]
    fn vp8_descriptor_parsing_is_bounds_checked() {
        assert_eq!(vp8_payload(&[0x10, 0xAA]), Some((true, &[0xAA][..])));
        assert_eq!(vp8_payload(&[0x00, 0xAA]), Some((false, &[0xAA][..])));
        // X, I with 16-bit picture id.
        assert_eq!(
            vp8_payload(&[0x90, 0x80, 0x81, 0x02, 0xBB]),
            Some((true, &[0xBB][..]))
        );
        for bad in [
            &[][..],
            &[0x90],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x81, 0x02],
            &[0x10],
        ] {
            assert_eq!(vp8_payload(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn vp8_assembly_drops_frames_with_holes() {
        let mut a = Vp8Assembler::default();
        assert_eq!(a.push(&[0x10, 1], 100, false, false), None);
        assert_eq!(a.push(&[0x00, 2], 100, true, false), Some(vec![1, 2]));
        assert_eq!(a.push(&[0x10, 3], 200, false, false), None);
        // The middle packet was lost.
        assert_eq!(a.push(&[0x00, 4], 200, true, true), None);
        assert_eq!(a.dropped, 1);
        assert_eq!(a.push(&[0x10, 5], 300, true, false), Some(vec![5]));
    }
}
