//! `linnet call` and `linnet answer`: a call from the command line, with a tone or a WAV
//! file as the microphone and a WAV file as the speaker (and a VP8 IVF file as the camera).
//! Each change of the call's state is printed as a JSON line.

use std::sync::Arc;
use std::time::Duration;

use linnet_call::audio::{AudioSink, AudioSource, Tone, WavRecorder, WavSource};
use linnet_call::video::{FrameList, IvfReader};
use linnet_client::calls::{CallDirection, CallId, CallItem, CallMedia, CallOptions, CallState};
use linnet_client::{ChatListListener, ChatListSnapshot, Client, ClientError};
use serde_json::json;
use tokio::sync::mpsc;

use crate::args::Args;
use crate::{account, bad, login_once, open, pos, print};

struct ListTx(mpsc::UnboundedSender<Arc<ChatListSnapshot>>);

impl ChatListListener for ListTx {
    fn on_update(&self, s: Arc<ChatListSnapshot>) {
        let _ = self.0.send(s);
    }
}

fn seconds(args: &Args, name: &str, default: f64) -> Result<Duration, ClientError> {
    let s: f64 = match args.opt(name) {
        Some(v) => v
            .parse()
            .map_err(|_| bad(format!("--{name} wants seconds")))?,
        None => default,
    };
    if !(0.0..=86_400.0).contains(&s) {
        return Err(bad(format!("--{name} out of range")));
    }
    Ok(Duration::from_secs_f64(s))
}

/// The media from the options: `--tone HZ` or `--play FILE.wav` as the microphone,
/// `--record FILE.wav` as the speaker, `--video FILE.ivf` as the camera.
fn media(args: &Args) -> Result<(CallMedia, Option<WavRecorder>, bool), ClientError> {
    let source: Option<Box<dyn AudioSource>> = match (args.opt("tone"), args.opt("play")) {
        (Some(_), Some(_)) => return Err(bad("--tone or --play, not both")),
        (Some(hz), None) => {
            let hz: f32 = hz
                .parse()
                .map_err(|_| bad("--tone wants a frequency in Hz"))?;
            if !(20.0..=20_000.0).contains(&hz) {
                return Err(bad("--tone: 20 to 20000 Hz"));
            }
            Some(Box::new(Tone::new(hz, 0.3)))
        }
        (None, Some(path)) => Some(Box::new(
            WavSource::open(path).map_err(|e| bad(format!("--play: {e}")))?,
        )),
        (None, None) => None,
    };
    let recorder = match args.opt("record") {
        Some(path) => Some(WavRecorder::create(path).map_err(|e| bad(format!("--record: {e}")))?),
        None => None,
    };
    let video = match args.opt("video") {
        Some(path) => {
            let frames = IvfReader::read_all(path).map_err(|e| bad(format!("--video: {e}")))?;
            Some(FrameList::new(
                frames.into_iter().map(|f| (f.data, f.duration)),
            ))
        }
        None => None,
    };
    let has_video = video.is_some();
    Ok((
        CallMedia {
            audio_source: source,
            audio_sink: recorder.clone().map(|r| Box::new(r) as Box<dyn AudioSink>),
            video_source: video.map(|v| Box::new(v) as _),
            video_sink: None,
        },
        recorder,
        has_video,
    ))
}

fn state_json(c: &CallItem) -> serde_json::Value {
    json!({"call": c.id.0, "peer": c.peer, "direction": c.direction, "video": c.video, "state": c.state})
}

/// Prints the call's states until it ends, or until it has been connected for `talk`; then
/// hangs up. Returns the last state.
async fn follow(
    client: &Client,
    rx: &mut mpsc::UnboundedReceiver<Arc<ChatListSnapshot>>,
    id: CallId,
    talk: Duration,
) -> Result<CallItem, ClientError> {
    let mut last: Option<CallItem> = None;
    let mut hang_up_at: Option<tokio::time::Instant> = None;
    loop {
        let next = match hang_up_at {
            Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                Ok(s) => s,
                Err(_) => {
                    client.end_call(id)?;
                    hang_up_at = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(snapshot) = next else {
            return Err(ClientError::Internal("snapshot stream ended".into()));
        };
        let Some(item) = snapshot.calls.iter().find(|c| c.id == id) else {
            continue;
        };
        if last.as_ref() != Some(item) {
            print(&state_json(item));
            last = Some(item.clone());
        }
        match item.state {
            CallState::Ended { .. } => return Ok(item.clone()),
            CallState::Connected { .. } if hang_up_at.is_none() => {
                hang_up_at = Some(tokio::time::Instant::now() + talk);
            }
            _ => {}
        }
    }
}

/// `linnet call <jid>`: calls, talks for `--seconds` once connected, hangs up.
pub async fn call(args: &Args) -> Result<(), ClientError> {
    let peer = pos(args, 0, "JID to call")?;
    let (media, recorder, video) = media(args)?;
    let talk = seconds(args, "seconds", 10.0)?;
    let client = open(args)?;
    let acc = account(&client, args)?;
    login_once(&client, acc).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = client.subscribe_chat_list(ListTx(tx));
    let result = async {
        let id = client
            .start_call(acc, peer, CallOptions { video }, media)
            .await?;
        follow(&client, &mut rx, id, talk).await
    }
    .await;
    finish(&client, recorder).await;
    result.map(drop)
}

/// `linnet answer`: waits for a call (`--wait`), takes it, talks for `--seconds`.
pub async fn answer(args: &Args) -> Result<(), ClientError> {
    let (media, recorder, _) = media(args)?;
    let talk = seconds(args, "seconds", 10.0)?;
    let wait = seconds(args, "wait", 60.0)?;
    let from = args.opt("from");
    let client = open(args)?;
    let acc = account(&client, args)?;
    login_once(&client, acc).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = client.subscribe_chat_list(ListTx(tx));
    // Online: a call placed from now on rings here.
    print(&json!({"waiting": true}));
    let result = async {
        let ringing = tokio::time::timeout(wait, async {
            while let Some(s) = rx.recv().await {
                let found = s.calls.iter().find(|c| {
                    c.account == acc
                        && c.direction == CallDirection::Incoming
                        && matches!(c.state, CallState::Ringing { .. })
                        && from.is_none_or(|f| f == c.peer)
                });
                if let Some(c) = found {
                    return Some(c.clone());
                }
            }
            None
        })
        .await
        .map_err(|_| ClientError::NotFound("no call came".into()))?
        .ok_or_else(|| ClientError::Internal("snapshot stream ended".into()))?;
        print(&state_json(&ringing));
        client.accept_call(ringing.id, media)?;
        follow(&client, &mut rx, ringing.id, talk).await
    }
    .await;
    finish(&client, recorder).await;
    result.map(drop)
}

async fn finish(client: &Client, recorder: Option<WavRecorder>) {
    client.shutdown().await;
    if let Some(r) = recorder {
        if let Err(e) = r.finish() {
            eprintln!("linnet: finishing the recording: {e}");
        }
    }
}
