//! Audio for calls: 48 kHz mono PCM in 20 ms frames, Opus on the wire.
//!
//! Capture and playback are the platform's; this module holds what the core needs to call
//! without a platform at all (the CLI and the tests): a tone generator, WAV files in and
//! out, the Opus codec, and a frequency estimator to check what came out of the far end.

use std::f64::consts::PI;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The one sample rate the media path runs at: Opus' native rate, so no resampling on the
/// hot path.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame at [`SAMPLE_RATE`] — the Opus frame size we send.
pub const FRAME_SAMPLES: usize = 960;
/// Duration of one frame.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// Largest Opus frame the decoder may produce (120 ms), so a peer that sends longer frames
/// than we do is decoded instead of rejected.
const MAX_DECODED_SAMPLES: usize = 5760;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot open WAV file: {0}")]
    WavOpen(String),
    #[error("unsupported WAV file: {0}")]
    WavUnsupported(String),
    #[error("cannot write WAV file: {0}")]
    WavWrite(String),
    #[error("Opus codec error: {0}")]
    Opus(String),
    #[error("a PCM frame must hold {FRAME_SAMPLES} samples (20 ms at 48 kHz mono), got {0}")]
    FrameSize(usize),
}

/// Where outgoing audio comes from: a microphone on a phone, a tone or a WAV file here.
pub trait AudioSource: Send {
    /// The next 20 ms frame ([`FRAME_SAMPLES`] samples, 48 kHz mono), or `None` once the
    /// source has ended (the call then sends silence). Frames of another length are padded
    /// or cut to [`FRAME_SAMPLES`].
    fn next_frame(&mut self) -> Option<Vec<i16>>;
}

/// Where decoded incoming audio goes: the speaker, a WAV file, a test buffer.
pub trait AudioSink: Send {
    /// One decoded frame, 48 kHz mono (normally [`FRAME_SAMPLES`] samples; concealment of lost
    /// packets produces frames of the same size).
    fn frame(&mut self, pcm: &[i16]);
}

/// The default source: nothing to say.
pub struct Silence;

impl AudioSource for Silence {
    fn next_frame(&mut self) -> Option<Vec<i16>> {
        Some(vec![0; FRAME_SAMPLES])
    }
}

/// The default sink: nobody is listening.
pub struct Discard;

impl AudioSink for Discard {
    fn frame(&mut self, _pcm: &[i16]) {}
}

/// A sine tone, endless unless given a duration.
pub struct Tone {
    hz: f64,
    amplitude: f64,
    phase: f64,
    frames_left: Option<u64>,
}

impl Tone {
    /// `amplitude` is the peak as a fraction of full scale (clamped to 0..=1).
    pub fn new(hz: f32, amplitude: f32) -> Self {
        Self {
            hz: f64::from(hz),
            amplitude: f64::from(amplitude.clamp(0.0, 1.0)),
            phase: 0.0,
            frames_left: None,
        }
    }

    /// Ends the tone after `duration` (rounded up to whole frames).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        let frames = duration.as_micros().div_ceil(FRAME_DURATION.as_micros());
        self.frames_left = Some(u64::try_from(frames).unwrap_or(u64::MAX));
        self
    }
}

impl AudioSource for Tone {
    fn next_frame(&mut self) -> Option<Vec<i16>> {
        if let Some(left) = self.frames_left.as_mut() {
            if *left == 0 {
                return None;
            }
            *left -= 1;
        }
        let step = 2.0 * PI * self.hz / f64::from(SAMPLE_RATE);
        let peak = self.amplitude * f64::from(i16::MAX);
        let frame = (0..FRAME_SAMPLES)
            .map(|_| {
                let s = (self.phase.sin() * peak) as i16;
                // Kept in [0, 2π) so the phase does not lose precision over a long call.
                self.phase = (self.phase + step) % (2.0 * PI);
                s
            })
            .collect();
        Some(frame)
    }
}

/// A WAV file as an audio source: mixed down to mono and resampled to 48 kHz at open time,
/// so the real-time sender only slices.
pub struct WavSource {
    samples: Vec<i16>,
    pos: usize,
}

impl WavSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let reader = hound::WavReader::open(path.as_ref())
            .map_err(|e| AudioError::WavOpen(e.to_string()))?;
        let spec = reader.spec();
        if spec.channels == 0 {
            return Err(AudioError::WavUnsupported("zero channels".into()));
        }
        // Below 8 kHz is no speech codec's input and above 192 kHz is no recorder's output:
        // anything outside is a broken header, not audio to convert.
        if !(8_000..=192_000).contains(&spec.sample_rate) {
            return Err(AudioError::WavUnsupported(format!(
                "sample rate {} Hz (accepted: 8000..=192000 Hz; the call runs at 48000 Hz)",
                spec.sample_rate
            )));
        }
        let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Float, 32) => reader
                .into_samples::<f32>()
                .collect::<Result<_, _>>()
                .map_err(|e| AudioError::WavOpen(e.to_string()))?,
            (hound::SampleFormat::Int, bits @ 8..=32) => {
                let scale = 1.0 / (1u64 << (bits - 1)) as f32;
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale))
                    .collect::<Result<_, _>>()
                    .map_err(|e| AudioError::WavOpen(e.to_string()))?
            }
            (format, bits) => {
                return Err(AudioError::WavUnsupported(format!(
                    "{bits}-bit {format:?} samples"
                )))
            }
        };
        let channels = usize::from(spec.channels);
        let mono: Vec<f32> = interleaved
            .chunks(channels)
            .map(|c| c.iter().sum::<f32>() / channels as f32)
            .collect();
        let resampled = resample_linear(&mono, spec.sample_rate, SAMPLE_RATE);
        let samples = resampled
            .into_iter()
            // The inverse of the integer scaling above, so 16-bit files come back bit-exact.
            .map(|v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        Ok(Self { samples, pos: 0 })
    }

    /// Length of the (converted) audio.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(SAMPLE_RATE))
    }
}

/// Linear interpolation: good enough for test material and voice prompts; real capture
/// arrives at 48 kHz from the platform.
fn resample_linear(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let out_len = (input.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let ratio = f64::from(from) / f64::from(to);
    (0..out_len)
        .map(|i| {
            let x = i as f64 * ratio;
            let i0 = x.floor() as usize;
            let frac = (x - i0 as f64) as f32;
            let a = input.get(i0).copied().unwrap_or(0.0);
            let b = input.get(i0 + 1).copied().unwrap_or(a);
            a + (b - a) * frac
        })
        .collect()
}

impl AudioSource for WavSource {
    fn next_frame(&mut self) -> Option<Vec<i16>> {
        if self.pos >= self.samples.len() {
            return None;
        }
        let end = (self.pos + FRAME_SAMPLES).min(self.samples.len());
        let mut frame = self.samples[self.pos..end].to_vec();
        frame.resize(FRAME_SAMPLES, 0);
        self.pos = end;
        Some(frame)
    }
}

/// Records what it receives to a 48 kHz mono 16-bit WAV file.
///
/// A handle: clones share the file, so one clone can be handed to a call as its sink while
/// the caller keeps another to [`finish`](Self::finish) it — the call owns its sink until it
/// is torn down, which is later than a test or a UI wants the file complete.
#[derive(Clone)]
pub struct WavRecorder {
    writer: Arc<Mutex<Option<hound::WavWriter<BufWriter<File>>>>>,
}

impl WavRecorder {
    pub fn create(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path.as_ref(), spec)
            .map_err(|e| AudioError::WavWrite(e.to_string()))?;
        Ok(Self {
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    /// Completes the file (header sizes, flush). Frames received afterwards are dropped.
    /// Idempotent.
    pub fn finish(&self) -> Result<(), AudioError> {
        let writer = match self.writer.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        match writer {
            Some(w) => w
                .finalize()
                .map_err(|e| AudioError::WavWrite(e.to_string())),
            None => Ok(()),
        }
    }
}

impl AudioSink for WavRecorder {
    fn frame(&mut self, pcm: &[i16]) {
        let Ok(mut guard) = self.writer.lock() else {
            return;
        };
        if let Some(w) = guard.as_mut() {
            for &s in pcm {
                if let Err(e) = w.write_sample(s) {
                    tracing::warn!("WAV recorder: {e}; recording stopped");
                    *guard = None;
                    return;
                }
            }
        }
    }
}

impl Drop for WavRecorder {
    fn drop(&mut self) {
        // Only the last handle completes the file; an earlier drop must not cut it short.
        if Arc::strong_count(&self.writer) == 1 {
            if let Err(e) = self.finish() {
                tracing::warn!("WAV recorder: {e}");
            }
        }
    }
}

/// Collects received PCM in memory (tests, level meters).
#[derive(Clone, Default)]
pub struct PcmCollector {
    samples: Arc<Mutex<Vec<i16>>>,
}

impl PcmCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything received so far.
    pub fn samples(&self) -> Vec<i16> {
        match self.samples.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl AudioSink for PcmCollector {
    fn frame(&mut self, pcm: &[i16]) {
        if let Ok(mut s) = self.samples.lock() {
            s.extend_from_slice(pcm);
        }
    }
}

/// Opus encoder for 20 ms 48 kHz mono frames, tuned for voice.
pub struct OpusEncoder {
    inner: opus::Encoder,
}

impl OpusEncoder {
    pub fn new() -> Result<Self, AudioError> {
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(|e| AudioError::Opus(e.to_string()))?;
        // In-band FEC lets the far end rebuild a lost packet from the next one, which costs
        // little at voice bitrates and is what mobile networks need.
        inner
            .set_inband_fec(true)
            .map_err(|e| AudioError::Opus(e.to_string()))?;
        inner
            .set_packet_loss_perc(5)
            .map_err(|e| AudioError::Opus(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Encodes one frame of exactly [`FRAME_SAMPLES`] samples.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, AudioError> {
        if pcm.len() != FRAME_SAMPLES {
            return Err(AudioError::FrameSize(pcm.len()));
        }
        // 1275 bytes is the largest a single Opus frame can be (RFC 6716 §3.2.1).
        self.inner
            .encode_vec(pcm, 1275)
            .map_err(|e| AudioError::Opus(e.to_string()))
    }
}

/// Opus decoder to 48 kHz mono. Stereo streams are downmixed by libopus itself.
pub struct OpusDecoder {
    inner: opus::Decoder,
    buf: Vec<i16>,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, AudioError> {
        let inner = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
            .map_err(|e| AudioError::Opus(e.to_string()))?;
        Ok(Self {
            inner,
            buf: vec![0; MAX_DECODED_SAMPLES],
        })
    }

    /// Decodes one packet. Malformed input is an error, never a panic.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, AudioError> {
        if packet.is_empty() {
            return Err(AudioError::Opus("empty packet".into()));
        }
        let n = self
            .inner
            .decode(packet, &mut self.buf, false)
            .map_err(|e| AudioError::Opus(e.to_string()))?;
        Ok(self.buf[..n].to_vec())
    }

    /// Conceals one lost 20 ms frame. If `next` (the packet after the gap) is given, its
    /// in-band FEC data is used to rebuild the lost frame instead of extrapolating.
    pub fn conceal(&mut self, next: Option<&[u8]>) -> Result<Vec<i16>, AudioError> {
        let out = &mut self.buf[..FRAME_SAMPLES];
        let n = match next {
            Some(p) if !p.is_empty() => self.inner.decode(p, out, true),
            _ => self.inner.decode(&[], out, false),
        }
        .map_err(|e| AudioError::Opus(e.to_string()))?;
        Ok(self.buf[..n].to_vec())
    }
}

/// The dominant frequency of `pcm` in Hz (0.0 for silence or too little signal).
///
/// Goertzel scan rather than an FFT: no dependency, and a coarse 5 Hz scan over 50–8000 Hz
/// followed by a 0.1 Hz refinement around the best bin is accurate to well under a hertz
/// for a steady tone. Leading and trailing silence (a call's set-up, concealment at the
/// end) is trimmed first; at most ~1.4 s from the middle of the signal is analysed.
pub fn dominant_frequency(pcm: &[i16], sample_rate: u32) -> f32 {
    const MAX_WINDOW: usize = 1 << 16;
    let threshold = 200i32;
    let first = pcm.iter().position(|&s| i32::from(s).abs() > threshold);
    let last = pcm.iter().rposition(|&s| i32::from(s).abs() > threshold);
    let (Some(first), Some(last)) = (first, last) else {
        return 0.0;
    };
    let signal = &pcm[first..=last];
    // Skip the edges: a codec's start-up and a tone's cut-off smear the spectrum.
    let margin = signal.len() / 10;
    let signal = &signal[margin..signal.len() - margin];
    if signal.len() < 256 || sample_rate == 0 {
        return 0.0;
    }
    let start = signal.len().saturating_sub(MAX_WINDOW) / 2;
    let window = &signal[start..signal.len().min(start + MAX_WINDOW)];
    let n = window.len();
    // Hann window: keeps a strong tone's leakage from looking like a neighbouring peak.
    let x: Vec<f64> = window
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let w = 0.5 - 0.5 * (2.0 * PI * i as f64 / (n - 1) as f64).cos();
            f64::from(s) * w
        })
        .collect();
    let rate = f64::from(sample_rate);
    let nyquist = rate / 2.0;
    let power = |f: f64| goertzel_power(&x, f, rate);
    let scan = |lo: f64, hi: f64, step: f64| {
        let mut best = (lo, f64::MIN);
        let mut f = lo;
        while f <= hi {
            let p = power(f);
            if p > best.1 {
                best = (f, p);
            }
            f += step;
        }
        best
    };
    let (coarse, _) = scan(50.0, 8000.0_f64.min(nyquist - 1.0), 5.0);
    let (mid, _) = scan((coarse - 5.0).max(1.0), coarse + 5.0, 0.5);
    let (fine, p) = scan((mid - 0.5).max(1.0), mid + 0.5, 0.05);
    if p <= 0.0 {
        return 0.0;
    }
    fine as f32
}

fn goertzel_power(x: &[f64], freq: f64, rate: f64) -> f64 {
    let coeff = 2.0 * (2.0 * PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tone(hz: f32, secs: f32) -> Vec<i16> {
        let mut t = Tone::new(hz, 0.5);
        let frames = (secs / 0.02) as usize;
        (0..frames).flat_map(|_| t.next_frame().unwrap()).collect()
    }

    #[test]
    fn dominant_frequency_of_tones() {
        for hz in [200.0, 440.0, 1000.0, 2750.0, 4000.0] {
            let f = dominant_frequency(&tone(hz, 1.0), SAMPLE_RATE);
            assert!((f - hz).abs() < 1.0, "{hz} Hz measured as {f} Hz");
        }
        assert_eq!(dominant_frequency(&vec![0; 48_000], SAMPLE_RATE), 0.0);
        assert_eq!(dominant_frequency(&[], SAMPLE_RATE), 0.0);
    }

    #[test]
    fn tone_with_duration_ends() {
        let mut t = Tone::new(440.0, 0.5).with_duration(Duration::from_millis(100));
        assert_eq!((0..10).filter_map(|_| t.next_frame()).count(), 5);
    }

    #[test]
    fn opus_round_trip_keeps_frequency() {
        let mut enc = OpusEncoder::new().unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let input = tone(1000.0, 1.0);
        let mut out = Vec::new();
        for frame in input.chunks(FRAME_SAMPLES) {
            let packet = enc.encode(frame).unwrap();
            assert!(!packet.is_empty() && packet.len() < 400);
            out.extend(dec.decode(&packet).unwrap());
        }
        assert_eq!(out.len(), input.len());
        let f = dominant_frequency(&out, SAMPLE_RATE);
        assert!((f - 1000.0).abs() < 3.0, "measured {f}");
        // Loss concealment and garbage must not panic.
        assert_eq!(dec.conceal(None).unwrap().len(), FRAME_SAMPLES);
        assert!(dec.decode(&[]).is_err());
        let _ = dec.decode(&[0xff, 0xff, 0xff, 0xff, 0x00, 0x13]);
        assert!(matches!(
            enc.encode(&[0; 10]),
            Err(AudioError::FrameSize(10))
        ));
    }

    #[test]
    fn wav_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        let rec = WavRecorder::create(&path).unwrap();
        let mut sink = rec.clone();
        let input = tone(440.0, 0.5);
        for frame in input.chunks(FRAME_SAMPLES) {
            sink.frame(frame);
        }
        rec.finish().unwrap();
        drop(sink);
        let mut src = WavSource::open(&path).unwrap();
        assert_eq!(src.duration(), Duration::from_millis(500));
        let back: Vec<i16> = std::iter::from_fn(|| src.next_frame()).flatten().collect();
        assert_eq!(back.len(), input.len());
        assert!(back == input, "samples changed in the WAV round trip");
    }

    #[test]
    fn wav_source_converts_rate_and_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..16_000 {
            let v = ((2.0 * PI * 500.0 * i as f64 / 16_000.0).sin() * 10_000.0) as i16;
            w.write_sample(v).unwrap();
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let mut src = WavSource::open(&path).unwrap();
        assert_eq!(src.duration(), Duration::from_secs(1));
        let pcm: Vec<i16> = std::iter::from_fn(|| src.next_frame()).flatten().collect();
        let f = dominant_frequency(&pcm, SAMPLE_RATE);
        assert!((f - 500.0).abs() < 1.0, "measured {f}");
    }

    #[test]
    fn wav_source_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.wav");
        std::fs::write(&path, b"RIFF\x04\x00\x00\x00WAVEjunk").unwrap();
        let err = WavSource::open(&path).err().unwrap();
        assert!(err.to_string().contains("WAV"), "{err}");
        assert!(WavSource::open(dir.path().join("missing.wav")).is_err());
    }
}
