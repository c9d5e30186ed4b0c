//! Bounds on what the server can make us hold in memory (HOSTILE-INPUTS.md item 2), applied
//! to the bytes before the XML parser sees them: rxml and minidom build whatever arrives, and
//! the iOS notification extension has 24 MB in all.
//!
//! [`LimitedIo`] sits between the TLS stream and tokio-xmpp's parser. It tokenizes the inbound
//! bytes just enough to know the element depth: depth 1 is the stream, each depth-2 element a
//! stanza or nonza. When a depth-2 element grows past [`InboundLimits::max_stanza_bytes`],
//! nests deeper than `max_depth`, or has a tag longer than `max_tag_bytes` (or a name or
//! attribute value longer than the parser takes), the parser is handed a well-formed end of
//! what it already has (the open elements closed, a marker child added to the depth-2
//! element), and the rest of that element is swallowed up to its end tag. The session
//! recognises the marker ([`Cuts::take_cut`]) and drops the element, counting it for XEP-0198
//! so that a resumption does not deliver it again (and again).
//!
//! What RFC 6120 §11.1 forbids anyway (comments, processing instructions other than the XML
//! declaration, DTDs and so entity definitions) fails the read.
//!
//! Markup (a tag from its `<` to its `>`) is never handed on in part: it is held until it is
//! complete, so that a cut never falls inside a start tag, where no clean end could be made
//! without knowing the namespace declarations still to come. Text is cut only between
//! characters and outside entity references. Holding needs a buffer of our own, which is why
//! `LimitedIo` is the buffered reader the parser reads from (`AsyncBufRead`) rather than a
//! plain `AsyncRead` under tokio's `BufStream`: it also hands out at most one stanza per read,
//! so that at a stream restart (after legacy SASL) nothing of the new stream has been read
//! with the old stream's state.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use xmpp_parsers::minidom::Element;

/// The namespace of the marker added to a cut element. Not a registered namespace: it never
/// leaves this process.
pub(crate) const NS_CUT: &str = "urn:x-linnet:cut";
const MARKER: &str = "truncated";

/// Limits on each element the server sends, applied before the XML parser builds anything.
/// An element past a limit reaches the session as [`crate::Event::Dropped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundLimits {
    /// Bytes of one stanza or nonza, tags included. 4 MiB by default; a notification
    /// extension may want far less.
    pub max_stanza_bytes: usize,
    /// Nesting inside a stanza, the stanza itself being 1. At least 1.
    pub max_depth: usize,
    /// Bytes of one tag with its attributes. The server's stream header must fit: a longer
    /// one fails the connection. A name or attribute value is limited to 8000 bytes in any
    /// case: the parser refuses longer ones, and would end the stream.
    pub max_tag_bytes: usize,
}

impl Default for InboundLimits {
    fn default() -> Self {
        InboundLimits {
            max_stanza_bytes: 4 << 20,
            max_depth: 64,
            max_tag_bytes: 64 << 10,
        }
    }
}

impl InboundLimits {
    fn effective(self) -> Self {
        InboundLimits {
            max_stanza_bytes: self.max_stanza_bytes.max(1),
            max_depth: self.max_depth.max(1),
            max_tag_bytes: self.max_tag_bytes.max(1),
        }
    }
}

/// Which limit an element passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// More than [`InboundLimits::max_stanza_bytes`].
    TooLarge,
    /// Nested deeper than [`InboundLimits::max_depth`].
    TooDeep,
    /// A tag longer than [`InboundLimits::max_tag_bytes`], or a name or attribute value in
    /// it longer than the parser takes (8 KB).
    TagTooLong,
}

impl DropReason {
    fn attr(self) -> &'static str {
        match self {
            DropReason::TooLarge => "size",
            DropReason::TooDeep => "depth",
            DropReason::TagTooLong => "tag",
        }
    }

    fn from_attr(a: Option<&str>) -> Self {
        match a {
            Some("depth") => DropReason::TooDeep,
            Some("tag") => DropReason::TagTooLong,
            _ => DropReason::TooLarge,
        }
    }
}

/// Shared between a [`LimitedIo`] and whoever reads the elements parsed from it.
#[derive(Debug, Default)]
pub(crate) struct Cuts {
    /// Cut elements handed to the parser and not yet recognised by the reader. The marker
    /// alone is not trusted: anyone can put one into a message the server relays to us.
    pending: AtomicU32,
    /// Set right before a stream restart (after SASL): the next bytes open a new document.
    restart: AtomicBool,
}

impl Cuts {
    /// The parser is being reset for a new stream (RFC 6120 §6.4.6): so must the tokenizer.
    /// Call before the new stream header goes out; the server sends nothing before it.
    pub(crate) fn restart(&self) {
        self.restart.store(true, Ordering::Release);
    }

    /// `Some`: `el` is what is left of an element cut by the limits; drop it.
    pub(crate) fn take_cut(&self, el: &Element) -> Option<DropReason> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let reason = cut_marker(el)?;
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()?;
        Some(reason)
    }
}

/// The marker of a cut element: the last child, or the element itself when the cut came
/// before the element's own start tag could be handed on.
pub(crate) fn cut_marker(el: &Element) -> Option<DropReason> {
    let m = if el.is(MARKER, NS_CUT) {
        el
    } else {
        el.children().last().filter(|c| c.is(MARKER, NS_CUT))?
    };
    Some(DropReason::from_attr(m.attr("reason")))
}

/// The error a read fails with on forbidden or hopeless input.
#[derive(Debug)]
pub(crate) struct RestrictedXml(pub(crate) &'static str);

impl std::fmt::Display for RestrictedXml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restricted XML (RFC 6120 §11.1) or over the inbound limits: {}",
            self.0
        )
    }
}

impl std::error::Error for RestrictedXml {}

/// Our read error, if `e` is one (for a clearer [`crate::ConnectError`] than "network").
pub(crate) fn restricted(e: &io::Error) -> Option<&RestrictedXml> {
    e.get_ref()?.downcast_ref::<RestrictedXml>()
}

fn refused(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, RestrictedXml(why))
}

/// Where the tokenizer is. Markup states hold their token until it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Text,
    /// After `&` in text.
    Ref,
    /// After `<`.
    Lt,
    /// The name of a start tag.
    Name,
    /// A start tag after its name.
    Tag,
    /// An attribute value quoted with this byte.
    Value(u8),
    /// `/` in a start tag: `>` must follow.
    Slash,
    /// After `</`.
    EndTag,
    /// After `<!` and this many bytes of `[CDATA[`.
    Bang(u8),
    Cdata,
    /// `]` in a CDATA section.
    CdataB1,
    /// `]]` in a CDATA section.
    CdataB2,
    /// The XML declaration.
    Decl,
    DeclValue(u8),
    /// `?` in the XML declaration.
    DeclQ,
}

impl St {
    fn markup(self) -> bool {
        !matches!(
            self,
            St::Text | St::Ref | St::Cdata | St::CdataB1 | St::CdataB2
        )
    }

    fn in_cdata(self) -> bool {
        matches!(self, St::Cdata | St::CdataB1 | St::CdataB2)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Everything given was taken; more is needed.
    More,
    /// A depth-2 element ended with the last byte taken.
    Boundary,
    /// A limit was passed: hand on what was taken except its last `drop` bytes (a token
    /// that is not to be passed), then the closing sequence; what follows is swallowed.
    Cut {
        drop: usize,
    },
    /// The swallowed element ended with the last byte taken.
    Resume,
    Refused(&'static str),
}

const CDATA_OPEN: &[u8] = b"[CDATA[";
/// Entity and character references are at most this long (rxml refuses longer ones).
const MAX_REF: usize = 16;
/// Names and attribute values are at most this long, whatever `max_tag_bytes` says: rxml
/// (default options, as tokio-xmpp uses it) fails the whole stream on a name or attribute
/// value over 8 KiB, decoded, which a cut here avoids. Raw bytes are never fewer than decoded
/// ones, and the margin keeps us clear of an off-by-one there.
const MAX_TOKEN: usize = 8000;

/// The sans-I/O tokenizer.
#[derive(Debug)]
struct Scanner {
    limits: InboundLimits,
    st: St,
    /// Open elements, the stream's included.
    depth: usize,
    /// Bytes of the depth-2 element so far.
    stanza: usize,
    /// Bytes of the markup token in progress.
    tag: usize,
    /// Bytes of the name or attribute value in progress inside it.
    tok: usize,
    refs: usize,
    /// A limit was passed: cut at the next point where a clean cut is possible.
    over: Option<DropReason>,
    /// Swallowing the rest of a cut element.
    skipping: bool,
    /// An XML declaration may still come (the start of a stream).
    decl_ok: bool,
    /// Qualified names of the open elements below the stream, back to back (the last one
    /// possibly still being read), and where each ends.
    names: Vec<u8>,
    ends: Vec<usize>,
    /// The closing sequence of the last cut.
    synth: Vec<u8>,
}

impl Scanner {
    fn new(limits: InboundLimits) -> Self {
        Scanner {
            limits: limits.effective(),
            st: St::Text,
            depth: 0,
            stanza: 0,
            tag: 0,
            tok: 0,
            refs: 0,
            over: None,
            skipping: false,
            decl_ok: true,
            names: Vec::with_capacity(256),
            ends: Vec::with_capacity(16),
            synth: Vec::new(),
        }
    }

    fn reset(&mut self) {
        *self = Scanner::new(self.limits);
    }

    /// Bytes taken that belong to an unfinished token: not to be handed on yet.
    fn held(&self) -> usize {
        if self.st.markup() && !self.skipping {
            self.tag
        } else {
            0
        }
    }

    /// Whether the stanza byte count runs for the byte about to be read.
    fn counting(&self) -> bool {
        !self.skipping && (self.depth >= 2 || (self.depth == 1 && self.st.markup()))
    }

    fn feed(&mut self, data: &[u8]) -> (usize, Step) {
        let mut i = 0;
        while i < data.len() {
            let run = self.plain_run(&data[i..]);
            if run > 0 {
                i += run;
                continue;
            }
            let b = data[i];
            if self.counting() {
                self.stanza += 1;
                if self.stanza > self.limits.max_stanza_bytes && self.over.is_none() {
                    self.over = Some(DropReason::TooLarge);
                }
            }
            if self.over.is_some() && self.cut_possible_before(b) {
                return (i, self.cut_text());
            }
            i += 1;
            if let Some(step) = self.byte(b) {
                return (i, step);
            }
        }
        (i, Step::More)
    }

    /// How many bytes at the start of `rest` change nothing but the counters (text, names,
    /// attribute values, CDATA content), taken in one go; 0 when the next byte needs a look.
    fn plain_run(&mut self, rest: &[u8]) -> usize {
        let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
        let n = match self.st {
            St::Text => rest.iter().position(|&c| c == b'<' || c == b'&'),
            St::Value(q) => rest.iter().position(|&c| c == q || c == b'<'),
            St::Cdata => rest.iter().position(|&c| c == b']'),
            St::Name => rest
                .iter()
                .position(|&c| ws(c) || matches!(c, b'/' | b'>' | b'<')),
            St::Tag => rest
                .iter()
                .position(|&c| matches!(c, b'\'' | b'"' | b'/' | b'>' | b'<')),
            St::EndTag => rest.iter().position(|&c| c == b'>' || c == b'<'),
            _ => return 0,
        }
        .unwrap_or(rest.len());
        if n == 0 || self.skipping {
            return n;
        }
        let markup = self.st.markup();
        if markup && (self.tag + n > self.limits.max_tag_bytes || self.tok + n > MAX_TOKEN) {
            return 0;
        }
        if self.counting()
            && (self.over.is_some() || self.stanza + n > self.limits.max_stanza_bytes)
        {
            // Byte by byte from here: the cut needs its exact place.
            return 0;
        }
        if self.counting() {
            self.stanza += n;
        }
        let run = &rest[..n];
        if markup {
            self.tag += n;
            self.tok = match self.st {
                // Attribute names, whitespace and `=`: only the last name counts.
                St::Tag => match run.iter().rposition(|&c| ws(c) || c == b'=') {
                    Some(i) => n - (i + 1),
                    None => self.tok + n,
                },
                _ => self.tok + n,
            };
        }
        if self.st == St::Name && self.depth >= 1 {
            self.names.extend_from_slice(run);
        }
        n
    }

    /// Whether the parser can be handed a clean end right before byte `b`.
    fn cut_possible_before(&self, b: u8) -> bool {
        self.depth >= 2
            && !self.skipping
            && (self.st == St::Text || self.st.in_cdata())
            && (b & 0xC0) != 0x80
    }

    fn byte(&mut self, b: u8) -> Option<Step> {
        if self.st.markup() {
            self.tag += 1;
        }
        let step = match self.st {
            St::Text => {
                match b {
                    b'<' => {
                        self.st = St::Lt;
                        self.tag = 1;
                        self.tok = 0;
                        if self.depth == 1 && !self.skipping {
                            self.stanza = 1;
                        }
                    }
                    b'&' => {
                        self.st = St::Ref;
                        self.refs = 0;
                    }
                    _ => {}
                }
                None
            }
            St::Ref => {
                self.refs += 1;
                match b {
                    b';' => self.st = St::Text,
                    b'<' | b'&' => return Some(Step::Refused("malformed reference")),
                    _ if self.refs > MAX_REF => {
                        return Some(Step::Refused("reference too long"));
                    }
                    _ => {}
                }
                None
            }
            St::Lt => match b {
                b'/' => {
                    self.st = St::EndTag;
                    None
                }
                b'!' => {
                    self.st = St::Bang(0);
                    None
                }
                b'?' if self.depth == 0 && self.decl_ok => {
                    self.st = St::Decl;
                    None
                }
                b'?' => Some(Step::Refused("processing instruction")),
                _ => {
                    self.st = St::Name;
                    self.name_byte(b)
                }
            },
            St::Name => self.name_byte(b),
            St::Tag => match b {
                b'\'' | b'"' => {
                    self.st = St::Value(b);
                    self.tok = 0;
                    None
                }
                b'/' => {
                    self.st = St::Slash;
                    None
                }
                b'>' => self.start_tag_done(false),
                b'<' => Some(Step::Refused("malformed start tag")),
                b' ' | b'\t' | b'\r' | b'\n' | b'=' => {
                    self.tok = 0;
                    None
                }
                _ => {
                    // An attribute name.
                    self.tok += 1;
                    None
                }
            },
            St::Value(q) => {
                if b == q {
                    self.st = St::Tag;
                    self.tok = 0;
                } else if b == b'<' {
                    return Some(Step::Refused("'<' in an attribute value"));
                } else {
                    self.tok += 1;
                }
                None
            }
            St::Slash => match b {
                b'>' => self.start_tag_done(true),
                _ => Some(Step::Refused("malformed empty-element tag")),
            },
            St::EndTag => match b {
                b'>' => self.end_tag_done(),
                b'<' => Some(Step::Refused("malformed end tag")),
                _ => {
                    self.tok += 1;
                    None
                }
            },
            St::Bang(0) => match b {
                b'[' if self.depth >= 1 => {
                    self.st = St::Bang(1);
                    None
                }
                b'-' => Some(Step::Refused("comment")),
                b'D' | b'd' => Some(Step::Refused("DOCTYPE")),
                _ => Some(Step::Refused("markup declaration")),
            },
            St::Bang(k) => {
                let k = usize::from(k);
                if CDATA_OPEN.get(k) != Some(&b) {
                    return Some(Step::Refused("malformed CDATA section"));
                }
                if k + 1 == CDATA_OPEN.len() {
                    self.cdata_open_done()
                } else {
                    self.st = St::Bang(k as u8 + 1);
                    None
                }
            }
            St::Cdata => {
                if b == b']' {
                    self.st = St::CdataB1;
                }
                None
            }
            St::CdataB1 => {
                self.st = if b == b']' { St::CdataB2 } else { St::Cdata };
                None
            }
            St::CdataB2 => {
                self.st = match b {
                    b'>' => St::Text,
                    b']' => St::CdataB2,
                    _ => St::Cdata,
                };
                None
            }
            St::Decl => {
                match b {
                    b'?' => self.st = St::DeclQ,
                    b'\'' | b'"' => self.st = St::DeclValue(b),
                    _ => {}
                }
                None
            }
            St::DeclValue(q) => {
                if b == q {
                    self.st = St::Decl;
                }
                None
            }
            St::DeclQ => match b {
                b'>' => {
                    self.st = St::Text;
                    self.decl_ok = false;
                    let tag = std::mem::take(&mut self.tag);
                    (tag > self.limits.max_tag_bytes)
                        .then_some(Step::Refused("XML declaration too long"))
                }
                b'?' => None,
                b'\'' | b'"' => {
                    self.st = St::DeclValue(b);
                    None
                }
                _ => {
                    self.st = St::Decl;
                    None
                }
            },
        };
        if step.is_none()
            && self.st.markup()
            && !self.skipping
            && (self.tag > self.limits.max_tag_bytes || self.tok > MAX_TOKEN)
        {
            return Some(self.tag_too_long());
        }
        step
    }

    fn name_byte(&mut self, b: u8) -> Option<Step> {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                self.st = St::Tag;
                self.tok = 0;
                None
            }
            b'/' => {
                self.st = St::Slash;
                None
            }
            b'>' => self.start_tag_done(false),
            b'<' => Some(Step::Refused("malformed start tag")),
            _ => {
                self.tok += 1;
                if self.depth >= 1 && !self.skipping {
                    self.names.push(b);
                }
                None
            }
        }
    }

    fn stanza_done(&mut self) {
        self.stanza = 0;
        self.over = None;
    }

    /// The name being read (or just read) of the start tag in progress.
    fn drop_current_name(&mut self) {
        self.names.truncate(self.ends.last().copied().unwrap_or(0));
    }

    fn start_tag_done(&mut self, empty: bool) -> Option<Step> {
        self.st = St::Text;
        let tag = std::mem::take(&mut self.tag);
        if self.skipping {
            if !empty {
                self.depth += 1;
            } else if self.depth <= 1 {
                self.skipping = false;
                return Some(Step::Resume);
            }
            return None;
        }
        self.decl_ok = false;
        if self.depth == 0 {
            if tag > self.limits.max_tag_bytes {
                return Some(Step::Refused("stream header too long"));
            }
            if !empty {
                self.depth = 1;
            }
            return None;
        }
        let reason = if tag > self.limits.max_tag_bytes {
            Some(DropReason::TagTooLong)
        } else if self.depth > self.limits.max_depth {
            Some(DropReason::TooDeep)
        } else {
            self.over
        };
        if let Some(reason) = reason {
            // The tag is not handed on: the parser's elements are the ones open before it.
            self.close_all(reason, true, false);
            if !empty {
                self.depth += 1;
            }
            self.skipping = self.depth > 1;
            return Some(Step::Cut { drop: tag });
        }
        if empty {
            self.drop_current_name();
            if self.depth == 1 {
                self.stanza_done();
                return Some(Step::Boundary);
            }
        } else {
            self.ends.push(self.names.len());
            self.depth += 1;
        }
        None
    }

    fn end_tag_done(&mut self) -> Option<Step> {
        self.st = St::Text;
        let tag = std::mem::take(&mut self.tag);
        if self.skipping {
            self.depth = self.depth.saturating_sub(1);
            if self.depth <= 1 {
                self.skipping = false;
                return Some(Step::Resume);
            }
            return None;
        }
        if self.depth <= 1 {
            // The end of the stream.
            if tag > self.limits.max_tag_bytes {
                return Some(Step::Refused("stream end tag too long"));
            }
            self.depth = 0;
            return None;
        }
        let reason = if tag > self.limits.max_tag_bytes {
            Some(DropReason::TagTooLong)
        } else {
            self.over
        };
        if let Some(reason) = reason {
            // Dropped, so that the element it ends gets the marker before its end.
            self.close_all(reason, false, false);
            self.depth -= 1;
            self.skipping = self.depth > 1;
            return Some(Step::Cut { drop: tag });
        }
        self.ends.pop();
        self.drop_current_name();
        self.depth -= 1;
        if self.depth == 1 {
            self.stanza_done();
            return Some(Step::Boundary);
        }
        None
    }

    fn cdata_open_done(&mut self) -> Option<Step> {
        self.st = St::Cdata;
        let tag = std::mem::take(&mut self.tag);
        if self.skipping {
            return None;
        }
        let reason = self.over?;
        // The parser has not seen the section's opening: nothing to close.
        self.close_all(reason, false, false);
        self.skipping = self.depth > 1;
        Some(Step::Cut { drop: tag })
    }

    /// Cut inside text or CDATA, right before the byte that would come next.
    fn cut_text(&mut self) -> Step {
        let reason = self.over.unwrap_or(DropReason::TooLarge);
        self.close_all(reason, false, self.st.in_cdata());
        self.skipping = true;
        Step::Cut { drop: 0 }
    }

    /// A token in progress went past `max_tag_bytes` (or a name or value in it past
    /// `MAX_TOKEN`): it is dropped, the rest of it and of its element swallowed.
    fn tag_too_long(&mut self) -> Step {
        if self.depth == 0 {
            return Step::Refused("stream header too long");
        }
        let start_tag = matches!(
            self.st,
            St::Lt | St::Name | St::Tag | St::Value(_) | St::Slash
        );
        if self.depth == 1 && !start_tag {
            return Step::Refused("tag between stanzas too long");
        }
        let tag = self.tag;
        self.close_all(DropReason::TagTooLong, self.st != St::Name, false);
        self.skipping = true;
        Step::Cut { drop: tag }
    }

    /// The closing sequence for what the parser has been handed of the depth-2 element, with
    /// the marker as its last child. `name_known`: the name of a start tag being dropped is
    /// complete (it serves when that tag is the depth-2 element's own).
    fn close_all(&mut self, reason: DropReason, name_known: bool, in_cdata: bool) {
        let marker = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"<");
            out.extend_from_slice(MARKER.as_bytes());
            out.extend_from_slice(b" xmlns='");
            out.extend_from_slice(NS_CUT.as_bytes());
            out.extend_from_slice(b"' reason='");
            out.extend_from_slice(reason.attr().as_bytes());
            out.extend_from_slice(b"'/>");
        };
        let close = |out: &mut Vec<u8>, name: &[u8]| {
            out.extend_from_slice(b"</");
            out.extend_from_slice(name);
            out.extend_from_slice(b">");
        };
        self.synth.clear();
        if self.ends.is_empty() {
            // The stanza's own start tag is being dropped. Keep what the session needs to
            // count it (XEP-0198 counts stanzas, not nonzas) and nothing else of it.
            let name = &self.names[..];
            if name_known && matches!(name, b"message" | b"presence" | b"iq") {
                self.synth.push(b'<');
                self.synth.extend_from_slice(name);
                self.synth.push(b'>');
                marker(&mut self.synth);
                close(&mut self.synth, name);
            } else {
                marker(&mut self.synth);
            }
        } else {
            if in_cdata {
                self.synth.extend_from_slice(b"]]>");
            }
            for k in (1..self.ends.len()).rev() {
                close(&mut self.synth, &self.names[self.ends[k - 1]..self.ends[k]]);
            }
            marker(&mut self.synth);
            close(&mut self.synth, &self.names[..self.ends[0]]);
        }
        self.names.clear();
        self.ends.clear();
        self.over = None;
        self.stanza = 0;
    }
}

/// Read buffer size; it grows (up to `max_tag_bytes` more) only to hold one long tag.
const BUF: usize = 16 << 10;
/// Swallowed bytes after which a read yields to the scheduler.
const SKIP_BUDGET: usize = 256 << 10;

/// The transport under the XML parser: passes bytes through, limits elements (see the
/// module's documentation). Writes go straight to `inner`.
pub(crate) struct LimitedIo<S> {
    inner: S,
    scanner: Scanner,
    cuts: Arc<Cuts>,
    buf: Vec<u8>,
    /// Next byte to hand out.
    pos: usize,
    /// End of what may be handed out.
    pass_end: usize,
    /// End of what the scanner has seen.
    scan: usize,
    filled: usize,
    /// After `..pass_end` is handed out: drop up to here, then hand out the closing sequence.
    drop_to: Option<usize>,
    synth_pos: usize,
    serving_synth: bool,
    eof: bool,
    max_buf: usize,
}

impl<S> LimitedIo<S> {
    pub(crate) fn new(inner: S, limits: InboundLimits, cuts: Arc<Cuts>) -> Self {
        let scanner = Scanner::new(limits);
        let max_buf = scanner.limits.max_tag_bytes + BUF;
        LimitedIo {
            inner,
            scanner,
            cuts,
            buf: vec![0; BUF],
            pos: 0,
            pass_end: 0,
            scan: 0,
            filled: 0,
            drop_to: None,
            synth_pos: 0,
            serving_synth: false,
            eof: false,
            max_buf,
        }
    }

    pub(crate) fn into_inner(self) -> S {
        self.inner
    }

    /// Makes room after `filled` for more input, keeping what is not handed out yet.
    fn make_room(&mut self) -> io::Result<()> {
        if self.pos > 0 && (self.pos == self.filled || self.filled == self.buf.len()) {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.scan -= self.pos;
            self.pass_end -= self.pos;
            self.filled -= self.pos;
            self.pos = 0;
        }
        if self.filled == self.buf.len() {
            if self.buf.len() >= self.max_buf {
                // The scanner cuts any token longer than max_tag_bytes before this.
                return Err(refused("token does not fit the read buffer"));
            }
            let len = (self.buf.len() * 2).min(self.max_buf);
            self.buf.resize(len, 0);
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncBufRead for LimitedIo<S> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.cuts.restart.swap(false, Ordering::AcqRel) {
            if this.pos != this.scan || this.serving_synth || this.drop_to.is_some() {
                // The server went on before our new stream header: what it sent was read
                // as part of the old stream.
                return Poll::Ready(Err(refused("data before the stream restart")));
            }
            this.scanner.reset();
        }
        let mut skipped = 0;
        loop {
            if this.pos < this.pass_end {
                return Poll::Ready(Ok(&this.buf[this.pos..this.pass_end]));
            }
            if let Some(to) = this.drop_to.take() {
                this.pos = to;
                this.pass_end = to;
                this.serving_synth = true;
                this.synth_pos = 0;
            }
            if this.serving_synth {
                if this.synth_pos < this.scanner.synth.len() {
                    return Poll::Ready(Ok(&this.scanner.synth[this.synth_pos..]));
                }
                this.serving_synth = false;
                this.scanner.synth.clear();
            }
            if this.scan < this.filled {
                let skipping = this.scanner.skipping;
                let (n, step) = this.scanner.feed(&this.buf[this.scan..this.filled]);
                this.scan += n;
                if skipping {
                    this.pos = this.scan;
                    this.pass_end = this.scan;
                    skipped += n;
                }
                match step {
                    Step::More => this.pass_end = this.scan - this.scanner.held(),
                    Step::Boundary | Step::Resume => this.pass_end = this.scan,
                    Step::Cut { drop } => {
                        this.pass_end = this.scan - drop;
                        this.drop_to = Some(this.scan);
                        this.cuts.pending.fetch_add(1, Ordering::AcqRel);
                    }
                    Step::Refused(why) => return Poll::Ready(Err(refused(why))),
                }
                if skipped > SKIP_BUDGET {
                    // Megabytes may be waiting to be swallowed: let other tasks run.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(&[]));
            }
            this.make_room()?;
            let mut rb = ReadBuf::new(&mut this.buf[this.filled..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                this.eof = true;
            }
            this.filled += n;
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        if this.pos < this.pass_end {
            this.pos = (this.pos + amt).min(this.pass_end);
        } else if this.serving_synth {
            this.synth_pos = (this.synth_pos + amt).min(this.scanner.synth.len());
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = {
            let data = ready!(self.as_mut().poll_fill_buf(cx))?;
            let n = data.len().min(out.remaining());
            out.put_slice(&data[..n]);
            n
        };
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LimitedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1' version='1.0'>";
    const FOOTER: &str = "</stream:stream>";

    /// Hands out `data` in reads of the given sizes, cycled.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        k: usize,
    }

    impl Chunked {
        fn new(data: &[u8], sizes: &[usize]) -> Self {
            Chunked {
                data: data.to_vec(),
                pos: 0,
                sizes: sizes.to_vec(),
                k: 0,
            }
        }
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let size = this.sizes[this.k % this.sizes.len()].max(1);
            this.k += 1;
            let n = size.min(this.data.len() - this.pos).min(out.remaining());
            out.put_slice(&this.data[this.pos..this.pos + n]);
            this.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Chunked {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn limits(bytes: usize, depth: usize, tag: usize) -> InboundLimits {
        InboundLimits {
            max_stanza_bytes: bytes,
            max_depth: depth,
            max_tag_bytes: tag,
        }
    }

    /// What the parser would be handed, and how many elements were cut.
    fn run(input: &[u8], sizes: &[usize], l: InboundLimits) -> io::Result<(Vec<u8>, u32)> {
        let cuts = Arc::new(Cuts::default());
        let mut io = LimitedIo::new(Chunked::new(input, sizes), l, cuts.clone());
        let mut out = Vec::new();
        block_on(io.read_to_end(&mut out))?;
        Ok((out, cuts.pending.load(Ordering::Acquire)))
    }

    fn stream(stanzas: &[&str]) -> Vec<u8> {
        let mut s = String::from(HEADER);
        for x in stanzas {
            s.push_str(x);
        }
        s.push_str(FOOTER);
        s.into_bytes()
    }

    /// Parses a whole stream document: proves it well-formed and namespace-correct.
    fn parse(out: &[u8]) -> Element {
        let text = std::str::from_utf8(out).expect("UTF-8");
        text.parse()
            .unwrap_or_else(|e| panic!("not well-formed ({e}): {text}"))
    }

    fn children(root: &Element) -> Vec<&Element> {
        root.children().collect()
    }

    const TRICKY: &[&str] = &[
        "<message to='a@b' id='1' type=\"chat\"><body>1 &gt; 0 &amp;&amp; a/>b</body></message>",
        "<iq type='get' id='q' a='x>y' b=\"/>\" c='it\"s' d=\"it's\"><query xmlns='urn:q'/></iq>",
        "<message id='2'><body><![CDATA[<not-a-tag attr='>'> ]] ] &amp; ]]></body></message>",
        "<presence/>",
        "\n \t",
        "<r xmlns='urn:xmpp:sm:3'/>",
        "<message id='3'><x:y xmlns:x='urn:x' x:z='1'><x:w/></x:y><body xml:lang='de'>Grüße € 😀 — 日本語</body></message>",
        "<message\n id='4'\t><body  >&#x1F600;&#65;&lt;&quot;&apos;</body ></message >",
        "<message id='5'><a><b><c><d><e/></d></c></b></a></message>",
    ];

    #[test]
    fn ordinary_stanzas_pass_byte_identical() {
        let input = stream(TRICKY);
        for sizes in [&[1][..], &[2, 3, 5, 7], &[13, 1, 64], &[4096], &[1 << 20]] {
            let (out, cut) = run(&input, sizes, InboundLimits::default()).expect("read");
            assert_eq!(cut, 0);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&input),
                "sizes {sizes:?}"
            );
        }
        let root = parse(&input);
        assert_eq!(children(&root).len(), 8);
    }

    #[test]
    fn oversized_stanza_becomes_a_truncated_element_and_the_next_one_is_intact() {
        let big = format!(
            "<message id='big' from='p@q/r'><x xmlns='urn:x'><body>{}</body></x></message>",
            "é".repeat(200_000)
        );
        let next = "<message id='next'><body>after</body></message>";
        let input = stream(&[&big, next]);
        for sizes in [&[1500][..], &[1 << 16], &[7, 1]] {
            let (out, cut) = run(&input, sizes, limits(1000, 64, 1000)).expect("read");
            assert_eq!(cut, 1);
            assert!(
                out.len() < 1000 + HEADER.len() + next.len() + 200,
                "{}",
                out.len()
            );
            let root = parse(&out);
            let c = children(&root);
            assert_eq!(c.len(), 2);
            assert_eq!(c[0].attr("id"), Some("big"));
            assert_eq!(cut_marker(c[0]), Some(DropReason::TooLarge));
            // The cut fell between characters.
            let text = c[0]
                .get_child("x", "urn:x")
                .expect("x")
                .get_child("body", "urn:x");
            assert!(text.expect("body").text().chars().all(|ch| ch == 'é'));
            assert_eq!(c[1].attr("id"), Some("next"));
            assert_eq!(
                c[1].get_child("body", "jabber:client").map(|b| b.text()),
                Some("after".into())
            );
            assert_eq!(cut_marker(c[1]), None);
        }
    }

    /// A stanza whose cut point is moved over every byte: inside start tags, attribute
    /// values, names, end tags, references, CDATA and multibyte characters. Some of its tags
    /// are longer than the test stream's header, so that the tag limit can fall inside them.
    fn dense() -> String {
        let pad = "z".repeat(150);
        let ws = " ".repeat(200);
        format!(
            "<message to='a@b' id='d1' pad='{pad}'><x xmlns='urn:a' a1='v>/&amp;é' a2=\"q'/>\" pad='{pad}'><p:y xmlns:p='urn:p' p:k='v'>t é€😀 &amp; &#x41;<![CDATA[<a>]]]]><p:e/></p:y{ws}></x><body>hi</body></message>"
        )
    }

    const NEXT: &str = "<message id='n'><body>next</body></message>";

    /// Whether `NEXT` itself passes limits `l`.
    fn next_passes(l: InboundLimits) -> bool {
        NEXT.len() <= l.max_stanza_bytes && l.max_depth >= 2 && longest_tag(NEXT) <= l.max_tag_bytes
    }

    /// The cut stanza, then `NEXT` (cut too if it does not pass the limits itself).
    fn check_cut_output(out: &[u8], cut: u32, l: InboundLimits) {
        let root = parse(out);
        let c = children(&root);
        let shown = String::from_utf8_lossy(out);
        assert_eq!(c.len(), 2, "{l:?}: {shown}");
        assert!(cut_marker(c[0]).is_some(), "{l:?}: {shown}");
        if next_passes(l) {
            assert_eq!(cut, 1, "{l:?}: {shown}");
            assert_eq!(c[1].attr("id"), Some("n"));
            assert_eq!(c[1].children().count(), 1);
            assert_eq!(cut_marker(c[1]), None);
        } else {
            assert_eq!(cut, 2, "{l:?}: {shown}");
            assert!(cut_marker(c[1]).is_some(), "{l:?}: {shown}");
        }
    }

    /// The longest tag of `xml` (quotes respected).
    fn longest_tag(xml: &str) -> usize {
        let (mut longest, mut start, mut quote) = (0, None, None);
        for (i, c) in xml.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') if start.is_some() => quote = Some(c),
                (None, '<') => start = Some(i),
                (None, '>') => {
                    if let Some(s) = start.take() {
                        longest = longest.max(i + 1 - s);
                    }
                }
                _ => {}
            }
        }
        longest
    }

    #[test]
    fn a_cut_anywhere_yields_well_formed_output() {
        let dense = dense();
        let input = stream(&[&dense, NEXT]);
        for bytes in 1..dense.len() {
            let l = limits(bytes, 64, 1000);
            for sizes in [&[1][..], &[5, 3], &[4096]] {
                let (out, cut) = run(&input, sizes, l).expect("read");
                check_cut_output(&out, cut, l);
            }
        }
        // At the limit exactly: nothing is cut.
        let (out, cut) = run(&input, &[3], limits(dense.len(), 64, 1000)).expect("read");
        assert_eq!((cut, out), (0, input.clone()));
    }

    #[test]
    fn a_tag_too_long_anywhere_yields_well_formed_output() {
        let dense = dense();
        let input = stream(&[&dense, NEXT]);
        let longest = longest_tag(&dense);
        let header = longest_tag(HEADER);
        assert!(longest > header + 50);
        for tag in header..=longest {
            let l = limits(1 << 20, 64, tag);
            for sizes in [&[1][..], &[4096]] {
                let (out, cut) = run(&input, sizes, l).expect("read");
                if tag == longest {
                    assert_eq!((cut, &out), (0, &input));
                } else {
                    check_cut_output(&out, cut, l);
                }
            }
        }
        let e = run(&input, &[50], limits(1 << 20, 64, header - 1)).expect_err("header");
        assert_eq!(restricted(&e).map(|r| r.0), Some("stream header too long"));
    }

    #[test]
    fn a_stanza_whose_own_start_tag_is_too_long_keeps_its_name_only() {
        let attrs = "x".repeat(5000);
        let msg = format!("<message id='m' a='{attrs}'><body>x</body></message>");
        let nonza = format!("<a xmlns='urn:xmpp:sm:3' h='1' junk='{attrs}'/>");
        let prefixed = format!("<stream:error junk='{attrs}'><x/></stream:error>");
        let input = stream(&[&msg, &nonza, &prefixed, NEXT]);
        let (out, cut) = run(&input, &[100], limits(1 << 20, 64, 1000)).expect("read");
        assert_eq!(cut, 3);
        let root = parse(&out);
        let c = children(&root);
        assert_eq!(c.len(), 4);
        assert!(c[0].is("message", "jabber:client"));
        assert_eq!(c[0].attr("id"), None);
        assert_eq!(cut_marker(c[0]), Some(DropReason::TagTooLong));
        for x in &c[1..3] {
            assert!(x.is(MARKER, NS_CUT));
            assert_eq!(cut_marker(x), Some(DropReason::TagTooLong));
        }
        assert_eq!(c[3].attr("id"), Some("n"));
        // The same when only the byte limit is below the start tag.
        let (out, cut) = run(&input, &[100], limits(2000, 64, 1 << 20)).expect("read");
        assert_eq!(cut, 3);
        let root = parse(&out);
        assert!(children(&root)[0].is("message", "jabber:client"));
    }

    #[test]
    fn names_and_values_the_parser_would_refuse_are_cut() {
        let fits = format!(
            "<message id='f'><x xmlns='urn:x' v='{}'/></message>",
            "v".repeat(MAX_TOKEN)
        );
        let input = stream(&[&fits]);
        let (out, cut) = run(&input, &[4096], InboundLimits::default()).expect("read");
        assert_eq!((cut, &out), (0, &input));
        parse(&out);
        let long = "v".repeat(MAX_TOKEN + 1);
        for stanza in [
            format!("<message id='a'><x xmlns='urn:x' v='{long}'/></message>"),
            format!("<message id='b'><x xmlns='urn:x' {long}='v'/></message>"),
            format!("<message id='c'><{long} xmlns='urn:x'/></message>"),
            format!("<message id='d'><x xmlns='urn:x'></x{long}></message>"),
            format!("<message id='e' v='{long}'><body>x</body></message>"),
        ] {
            let input = stream(&[&stanza, NEXT]);
            for sizes in [&[1000][..], &[1 << 16]] {
                let (out, cut) = run(&input, sizes, InboundLimits::default()).expect("read");
                check_cut_output(&out, cut, InboundLimits::default());
                let root = parse(&out);
                assert_eq!(cut_marker(children(&root)[0]), Some(DropReason::TagTooLong));
            }
        }
    }

    #[test]
    fn too_deep_nesting_is_cut() {
        let deep = format!(
            "<message id='deep'>{}{}</message>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        let input = stream(&[&deep, NEXT]);
        for depth in [1, 2, 5, 64] {
            let l = limits(1 << 20, depth, 1000);
            let (out, cut) = run(&input, &[1, 9], l).expect("read");
            check_cut_output(&out, cut, l);
            let root = parse(&out);
            let c = children(&root);
            assert_eq!(c.len(), 2);
            assert_eq!(cut_marker(c[0]), Some(DropReason::TooDeep));
            let mut levels = 1;
            let mut e = c[0];
            while let Some(inner) = e.get_child("a", "jabber:client") {
                levels += 1;
                e = inner;
            }
            assert_eq!(levels, depth);
        }
        // 64 levels is fine.
        let ok = format!(
            "<message>{}{}</message>",
            "<a>".repeat(63),
            "</a>".repeat(63)
        );
        let input = stream(&[&ok]);
        let (out, cut) = run(&input, &[4096], InboundLimits::default()).expect("read");
        assert_eq!((cut, out), (0, input));
    }

    #[test]
    fn forbidden_markup_fails_the_read() {
        let cases: &[(&str, &str)] = &[
            ("<!-- hi -->", "comment"),
            ("<message><!-- hi --></message>", "comment"),
            ("<message><?php x?></message>", "processing instruction"),
            ("<?xml version='1.0'?>", "processing instruction"),
            ("<!DOCTYPE lolz [<!ENTITY lol 'lol'>]>", "DOCTYPE"),
            ("<message><!ENTITY lol 'lol'></message>", "markup declaration"),
            ("<message><body>&lol9;&lol9;&lol9;&lol9;&lol9;&lol9;</body></message>", ""),
            ("<message><body>&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;</body></message>", "reference too long"),
        ];
        for (bad, why) in cases {
            let input = stream(&[NEXT, bad, NEXT]);
            match run(&input, &[7], InboundLimits::default()) {
                // Undefined entities are the parser's to refuse (rxml knows no DTD).
                Ok(_) if why.is_empty() => {}
                Ok((out, _)) => panic!("{bad} passed: {}", String::from_utf8_lossy(&out)),
                Err(e) => {
                    let r = restricted(&e).unwrap_or_else(|| panic!("{bad}: {e}"));
                    assert_eq!(r.0, *why, "{bad}");
                }
            }
        }
        // Before the stream header too (billion laughs needs a DTD).
        let input = b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>]><stream:stream>";
        let e = run(input, &[5], InboundLimits::default()).expect_err("DOCTYPE");
        assert_eq!(restricted(&e).map(|r| r.0), Some("DOCTYPE"));
    }

    #[test]
    fn stream_restart_starts_a_new_document() {
        let first = format!("{HEADER}<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        let input = format!("{first}{HEADER}{NEXT}");
        for restart in [true, false] {
            let cuts = Arc::new(Cuts::default());
            let mut io = LimitedIo::new(
                Chunked::new(input.as_bytes(), &[1 << 16]),
                InboundLimits::default(),
                cuts.clone(),
            );
            let mut out = Vec::new();
            // What the parser reads up to the end of <success/>: nothing of what follows is
            // handed out (or even looked at) before it is consumed.
            while out.len() < first.len() {
                let got = block_on(io.fill_buf()).expect("read").to_vec();
                assert!(out.len() + got.len() <= first.len());
                io.consume(got.len());
                out.extend(got);
            }
            if restart {
                cuts.restart();
            }
            let rest = block_on(io.read_to_end(&mut out));
            if restart {
                rest.expect("new stream");
                assert_eq!(out, input.as_bytes());
            } else {
                let e = rest.expect_err("a second XML declaration");
                assert_eq!(restricted(&e).map(|r| r.0), Some("processing instruction"));
            }
        }
    }

    #[test]
    fn forged_markers_are_not_taken_for_cuts() {
        let cuts = Cuts::default();
        let forged: Element = format!(
            "<message xmlns='jabber:client'><body>hi</body><{MARKER} xmlns='{NS_CUT}'/></message>"
        )
        .parse()
        .expect("xml");
        assert_eq!(cuts.take_cut(&forged), None);
        cuts.pending.store(1, Ordering::Release);
        let plain: Element = "<message xmlns='jabber:client'><body>hi</body></message>"
            .parse()
            .expect("xml");
        assert_eq!(cuts.take_cut(&plain), None);
        assert_eq!(cuts.take_cut(&forged), Some(DropReason::TooLarge));
        assert_eq!(cuts.take_cut(&forged), None);
    }

    #[test]
    fn megabytes_are_swallowed_with_bounded_output() {
        let big = format!(
            "<message id='big'><body>{}</body><x a='{}'/></message>",
            "a".repeat(8 << 20),
            "b".repeat(1000)
        );
        let input = stream(&[&big, NEXT]);
        let (out, cut) = run(&input, &[16 << 10], InboundLimits::default()).expect("read");
        assert!(out.len() < (4 << 20) + 1000);
        check_cut_output(&out, cut, InboundLimits::default());
    }

    fn pick<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
        xs[rng.gen_range(0..xs.len())]
    }

    fn gen_text(rng: &mut StdRng, out: &mut String) {
        for _ in 0..rng.gen_range(0..6) {
            out.push_str(pick(
                rng,
                &[
                    "plain",
                    " ",
                    ">",
                    "/>",
                    "&amp;",
                    "&lt;",
                    "&#x1F600;",
                    "é",
                    "€",
                    "😀",
                    "\n",
                    "'\"",
                ],
            ));
        }
    }

    fn gen_value(rng: &mut StdRng, q: char, out: &mut String) {
        for _ in 0..rng.gen_range(0..5) {
            let frag = pick(
                rng,
                &[
                    "v", ">", "/>", "/", "&amp;", "&quot;", "é", "😀", "'", "\"", " ",
                ],
            );
            if !frag.contains(q) {
                out.push_str(frag);
            }
        }
    }

    fn gen_element(rng: &mut StdRng, depth: usize, out: &mut String) {
        let (name, decl) = match rng.gen_range(0..4) {
            0 => ("p:e", " xmlns:p='urn:p'"),
            1 => ("item", " xmlns='urn:other'"),
            _ => (pick(rng, &["a", "body", "x", "long-element-name"]), ""),
        };
        out.push('<');
        out.push_str(name);
        out.push_str(decl);
        for attr in ["id", "to", "v"] {
            if rng.gen_bool(0.5) {
                let ws = pick(rng, &[" ", "\n", "  \t"]);
                let q = if rng.gen_bool(0.5) { '\'' } else { '"' };
                out.push_str(ws);
                out.push_str(attr);
                out.push('=');
                out.push(q);
                gen_value(rng, q, out);
                out.push(q);
            }
        }
        if depth > 4 || rng.gen_bool(0.2) {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for _ in 0..rng.gen_range(0..4) {
            match rng.gen_range(0..4) {
                0 => gen_text(rng, out),
                1 => {
                    let mut c = String::new();
                    gen_text(rng, &mut c);
                    c.push_str(pick(rng, &["<a>", "&", "]]", "]", "x"]));
                    while c.contains("]]>") {
                        c = c.replace("]]>", "]] >");
                    }
                    out.push_str("<![CDATA[");
                    out.push_str(&c);
                    out.push_str("]]>");
                }
                _ => gen_element(rng, depth + 1, out),
            }
        }
        out.push_str("</");
        out.push_str(name);
        out.push('>');
    }

    #[test]
    fn random_stanzas_under_the_limits_pass_unchanged() {
        let mut rng = StdRng::seed_from_u64(0x11e7);
        for round in 0..300 {
            let mut body = String::new();
            for _ in 0..rng.gen_range(1..6) {
                gen_element(&mut rng, 1, &mut body);
                if rng.gen_bool(0.3) {
                    body.push(' ');
                }
            }
            let input = stream(&[&body]);
            parse(&input);
            let sizes: Vec<usize> = (0..rng.gen_range(1..5))
                .map(|_| rng.gen_range(1..200))
                .collect();
            let (out, cut) = run(&input, &sizes, InboundLimits::default()).expect("read");
            assert_eq!(cut, 0, "round {round}");
            assert_eq!(out, input, "round {round}, sizes {sizes:?}");
        }
    }

    #[test]
    fn random_cuts_are_well_formed() {
        let mut rng = StdRng::seed_from_u64(0xc07);
        for round in 0..300 {
            let mut stanza = String::from("<message id='r'>");
            for _ in 0..rng.gen_range(1..4) {
                gen_element(&mut rng, 2, &mut stanza);
            }
            stanza.push_str("</message>");
            let input = stream(&[&stanza, NEXT]);
            let l = limits(
                rng.gen_range(1..stanza.len()),
                rng.gen_range(1..6),
                rng.gen_range(longest_tag(HEADER)..400),
            );
            let sizes = [rng.gen_range(1..50), rng.gen_range(1..5000)];
            let (out, cut) = run(&input, &sizes, l).expect("read");
            assert!(cut >= 1, "round {round}");
            check_cut_output(&out, cut, l);
        }
    }
}
