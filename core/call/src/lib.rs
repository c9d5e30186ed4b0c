//! Calls (DESIGN.md §6): what is not XMPP signalling. The client crate drives Jingle
//! Message Initiation and the Jingle session; this crate owns the mapping between Jingle
//! RTP/ICE-UDP/DTLS descriptions and the SDP the WebRTC stack speaks, and the media path.

pub mod audio;
pub mod engine;
pub mod sdp;
pub mod video;

mod jitter;
