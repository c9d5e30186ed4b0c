//! Protobuf structures. Field numbers are those of the specifications: Signal's
//! WhisperTextProtocol.proto (SignalMessage, PreKeySignalMessage) for OMEMO 0.3 and the
//! protobuf schema of XEP-0384 for OMEMO 2. All fields are `optional` here so that a missing
//! "required" field is reported by our own checks as a malformed message, not by the decoder.

use prost::Message;

use crate::error::{malformed, Result};

/// OMEMO 0.3 `SignalMessage` (sent after the 0x33 version byte, followed by an 8-byte MAC).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SignalMessage {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub ratchet_key: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "2")]
    pub counter: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub previous_counter: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub ciphertext: Option<Vec<u8>>,
}

/// OMEMO 0.3 `PreKeySignalMessage` (sent after the 0x33 version byte).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PreKeySignalMessage {
    #[prost(uint32, optional, tag = "1")]
    pub pre_key_id: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub base_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub identity_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub message: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "5")]
    pub registration_id: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub signed_pre_key_id: Option<u32>,
}

/// OMEMO 2 `OMEMOMessage`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct OmemoMessage {
    #[prost(uint32, optional, tag = "1")]
    pub n: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    pub pn: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub dh_pub: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub ciphertext: Option<Vec<u8>>,
}

/// OMEMO 2 `OMEMOAuthenticatedMessage`. `message` holds the serialized `OMEMOMessage` as
/// bytes so that the MAC is checked over exactly the bytes received.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct OmemoAuthenticatedMessage {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub mac: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub message: Option<Vec<u8>>,
}

/// OMEMO 2 `OMEMOKeyExchange`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct OmemoKeyExchange {
    #[prost(uint32, optional, tag = "1")]
    pub pk_id: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    pub spk_id: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub ik: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub ek: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub message: Option<Vec<u8>>,
}

/// Our own session serialization (not a wire format).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SessionProto {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub local_identity: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub remote_identity: Vec<u8>,
    #[prost(bool, tag = "4")]
    pub initiator: bool,
    #[prost(bytes = "vec", tag = "5")]
    pub root_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    pub dhs_secret: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "7")]
    pub dhr: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub cks: Option<Vec<u8>>,
    #[prost(uint32, tag = "9")]
    pub ns: u32,
    #[prost(bytes = "vec", optional, tag = "10")]
    pub ckr: Option<Vec<u8>>,
    #[prost(uint32, tag = "11")]
    pub nr: u32,
    #[prost(uint32, tag = "12")]
    pub pn: u32,
    #[prost(message, repeated, tag = "13")]
    pub skipped: Vec<SkippedKeyProto>,
    #[prost(message, optional, tag = "14")]
    pub pending: Option<PendingKeyExchangeProto>,
    #[prost(bytes = "vec", tag = "15")]
    pub base_key: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "16")]
    pub previous_dhr: Vec<Vec<u8>>,
    /// The public half of `dhs_secret`, kept so that loading a session costs no scalar
    /// multiplication.
    #[prost(bytes = "vec", tag = "17")]
    pub dhs_public: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct SkippedKeyProto {
    #[prost(bytes = "vec", tag = "1")]
    pub dh: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub n: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub mk: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PendingKeyExchangeProto {
    #[prost(uint32, tag = "1")]
    pub pk_id: u32,
    #[prost(uint32, tag = "2")]
    pub spk_id: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub ek: Vec<u8>,
}

pub(crate) fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M> {
    M::decode(bytes).map_err(|_| malformed(what))
}

pub(crate) fn required<T>(v: Option<T>, what: &'static str) -> Result<T> {
    v.ok_or_else(|| malformed(what))
}
