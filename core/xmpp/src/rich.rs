//! Message payloads beyond the body: corrections (XEP-0308), retractions (XEP-0424),
//! replies (XEP-0461) with their fallback text (XEP-0428), reactions (XEP-0444), chat
//! states (XEP-0085) and displayed markers (XEP-0333). Parsing is lenient per element: a
//! malformed payload is ignored on its own and never costs the rest of the message.

use xmpp_parsers::minidom::Element;

use crate::elem::el;
use crate::inbound::{NS_HINTS, NS_SID};
use crate::jid::BareJid;

pub const NS_CORRECT: &str = "urn:xmpp:message-correct:0";
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
pub const NS_REPLY: &str = "urn:xmpp:reply:0";
pub const NS_FALLBACK: &str = "urn:xmpp:fallback:0";
pub const NS_REACTIONS: &str = "urn:xmpp:reactions:0";
pub const NS_CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";
pub const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
const NS_CLIENT: &str = "jabber:client";
/// Wraps the payloads an outbox entry adds to a message that is still to be encrypted.
const NS_OUTBOX: &str = "urn:linnet:outbox:0";

/// Longest message id we take as a reference; ids are opaque but no sane one is longer.
pub const MAX_ID_BYTES: usize = 256;
/// XEP-0444 leaves restrictions to the receiver: one reaction is one emoji, the longest of
/// which (tag sequences, ZWJ families) stay well below this.
pub const MAX_REACTION_BYTES: usize = 64;
/// Distinct reactions one sender can put on one message.
pub const MAX_REACTIONS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatState {
    Active,
    Composing,
    Paused,
    Inactive,
    Gone,
}

impl ChatState {
    const ALL: [ChatState; 5] = [
        ChatState::Active,
        ChatState::Composing,
        ChatState::Paused,
        ChatState::Inactive,
        ChatState::Gone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChatState::Active => "active",
            ChatState::Composing => "composing",
            ChatState::Paused => "paused",
            ChatState::Inactive => "inactive",
            ChatState::Gone => "gone",
        }
    }
}

/// What a reply refers to (XEP-0461): the referenced message's id and, when given, its
/// author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub to: Option<String>,
    pub id: String,
}

/// The complete set of a sender's reactions to one message (XEP-0444): it replaces the
/// set they sent before; an empty set withdraws them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reactions {
    pub id: String,
    pub emojis: Vec<String>,
}

/// Text of the body that is only there for clients without some feature (XEP-0428).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub for_ns: String,
    /// Code-point ranges of the body; `None`: the whole body.
    pub ranges: Option<Vec<(usize, usize)>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rich {
    /// XEP-0308: this message replaces the one with this id.
    pub replace: Option<String>,
    /// XEP-0424: retract the message with this id.
    pub retract: Option<String>,
    pub reply: Option<Reply>,
    pub reactions: Option<Reactions>,
    pub chat_state: Option<ChatState>,
    /// XEP-0333: the sender wants to know when it is displayed.
    pub markable: bool,
    /// XEP-0333: the message with this id, and all before it, were displayed.
    pub displayed: Option<String>,
    pub fallbacks: Vec<Fallback>,
    /// A file shared by URL (XEP-0066, XEP-0447 with XEP-0446 metadata); https only.
    pub file: Option<crate::files::SharedFile>,
}

fn id_attr(e: &Element) -> Option<String> {
    e.attr("id")
        .filter(|i| !i.is_empty() && i.len() <= MAX_ID_BYTES)
        .map(str::to_owned)
}

/// The payloads of a message stanza (or an OMEMO 2 envelope's content).
pub fn parse(message: &Element) -> Rich {
    let mut r = Rich::default();
    let mut reaction_sets = 0;
    for c in message.children() {
        let ns = c.ns();
        match (c.name(), ns.as_str()) {
            ("replace", NS_CORRECT) => r.replace = id_attr(c),
            ("retract", NS_RETRACT) => r.retract = id_attr(c),
            ("reply", NS_REPLY) => {
                r.reply = id_attr(c).map(|id| Reply {
                    to: c.attr("to").map(str::to_owned),
                    id,
                })
            }
            ("reactions", NS_REACTIONS) => {
                reaction_sets += 1;
                r.reactions = parse_reactions(c);
            }
            ("markable", NS_MARKERS) => r.markable = true,
            ("displayed", NS_MARKERS) => r.displayed = id_attr(c),
            (name, NS_CHAT_STATES) => {
                r.chat_state = ChatState::ALL.into_iter().find(|s| s.name() == name)
            }
            ("fallback", NS_FALLBACK) => {
                if let Some(f) = parse_fallback(c) {
                    r.fallbacks.push(f);
                }
            }
            _ => {}
        }
    }
    if reaction_sets > 1 {
        // XEP-0444 allows one: with two, the sender's meaning is unknown.
        r.reactions = None;
    }
    r.file = crate::files::parse(message);
    r
}

fn parse_reactions(c: &Element) -> Option<Reactions> {
    let id = id_attr(c)?;
    let mut emojis: Vec<String> = Vec::new();
    for e in c.children().filter(|e| e.is("reaction", NS_REACTIONS)) {
        let t = e.text();
        let t = t.trim();
        if t.is_empty() || t.len() > MAX_REACTION_BYTES || t.chars().any(char::is_control) {
            continue;
        }
        // XEP-0444: the same reaction at most once.
        if !emojis.iter().any(|x| x == t) {
            if emojis.len() == MAX_REACTIONS {
                return None;
            }
            emojis.push(t.to_owned());
        }
    }
    Some(Reactions { id, emojis })
}

fn parse_fallback(c: &Element) -> Option<Fallback> {
    let for_ns = c.attr("for").filter(|f| !f.is_empty())?.to_owned();
    let bodies: Vec<&Element> = c.children().filter(|b| b.is("body", NS_FALLBACK)).collect();
    if bodies.is_empty() {
        return Some(Fallback {
            for_ns,
            ranges: None,
        });
    }
    let mut ranges = Vec::new();
    for b in bodies {
        match (b.attr("start"), b.attr("end")) {
            (None, None) => {
                return Some(Fallback {
                    for_ns,
                    ranges: None,
                })
            }
            (Some(s), Some(e)) => {
                let (Ok(s), Ok(e)) = (s.parse::<u32>(), e.parse::<u32>()) else {
                    return None;
                };
                if s > e {
                    return None;
                }
                ranges.push((s as usize, e as usize));
            }
            _ => return None,
        }
    }
    Some(Fallback {
        for_ns,
        ranges: Some(ranges),
    })
}

impl Rich {
    /// Whether the body is nothing but fallback for the given feature.
    pub fn whole_body_fallback(&self, for_ns: &str) -> bool {
        self.fallbacks
            .iter()
            .any(|f| f.for_ns == for_ns && f.ranges.is_none())
    }

    /// `body` without the fallback text of the features named (those we render ourselves).
    /// Ranges outside the body are ignored, so a lying sender can hide only its own text.
    pub fn strip_fallback(&self, body: &str, for_ns: &[&str]) -> String {
        let mut cut: Vec<(usize, usize)> = Vec::new();
        for f in self
            .fallbacks
            .iter()
            .filter(|f| for_ns.contains(&f.for_ns.as_str()))
        {
            match &f.ranges {
                None => return String::new(),
                Some(r) => cut.extend(r.iter().copied()),
            }
        }
        if cut.is_empty() {
            return body.to_owned();
        }
        let kept: String = body
            .chars()
            .enumerate()
            .filter(|(i, _)| !cut.iter().any(|(s, e)| i >= s && i < e))
            .map(|(_, c)| c)
            .collect();
        kept
    }
}

/// What an outgoing chat message carries besides its body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extras {
    /// XEP-0308: the id of the (original) message this one corrects.
    pub replace: Option<String>,
    /// XEP-0461: what this message answers, and the quote of it that starts the body on
    /// the wire for clients without replies (XEP-0428; see [`reply_quote`]).
    pub reply: Option<(Reply, String)>,
    /// A shared file: the body is then its URL, marked as fallback for clients that show
    /// files (XEP-0428), and the URL is repeated out of band (XEP-0066) for older ones.
    pub file: Option<Box<crate::files::SharedFile>>,
}

impl Extras {
    pub fn is_empty(&self) -> bool {
        self.replace.is_none() && self.reply.is_none() && self.file.is_none()
    }

    /// The body as sent: the reply's quote, then the text.
    pub fn wire_body(&self, body: &str) -> String {
        match &self.reply {
            Some((_, quote)) => format!("{quote}{body}"),
            None => body.to_owned(),
        }
    }

    fn elements(&self) -> Vec<Element> {
        let mut out = Vec::new();
        if let Some(id) = &self.replace {
            out.push(el("replace", NS_CORRECT).attr("id", id).build());
        }
        if let Some((reply, quote)) = &self.reply {
            out.push(
                el("reply", NS_REPLY)
                    .attr_opt("to", reply.to.as_deref())
                    .attr("id", &reply.id)
                    .build(),
            );
            if !quote.is_empty() {
                out.push(
                    el("fallback", NS_FALLBACK)
                        .attr("for", NS_REPLY)
                        .child(
                            el("body", NS_FALLBACK)
                                .attr("start", "0")
                                .attr("end", quote.chars().count().to_string()),
                        )
                        .build(),
                );
            }
        }
        if let Some(file) = &self.file {
            out.extend(file.elements());
            let start = self.reply.as_ref().map_or(0, |(_, q)| q.chars().count());
            out.push(
                el("fallback", NS_FALLBACK)
                    .attr("for", crate::files::NS_SFS)
                    .child(
                        el("body", NS_FALLBACK)
                            .attr("start", start.to_string())
                            .attr("end", (start + file.url.chars().count()).to_string()),
                    )
                    .build(),
            );
        }
        out
    }

    /// Adds the payloads to a message stanza.
    pub(crate) fn apply(&self, mut message: Element) -> Element {
        for e in self.elements() {
            message.append_child(e);
        }
        message
    }

    /// A form to keep in the outbox until the message is built; "" when empty.
    pub fn to_xml(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut w = el("extras", NS_OUTBOX).build();
        for e in self.elements() {
            w.append_child(e);
        }
        if let Some((_, quote)) = &self.reply {
            w.append_child(el("quote", NS_OUTBOX).text(quote.clone()).build());
        }
        String::from(&w)
    }

    pub fn from_xml(xml: &str) -> Option<Extras> {
        if xml.is_empty() {
            return Some(Extras::default());
        }
        let w: Element = xml.parse().ok()?;
        if !w.is("extras", NS_OUTBOX) {
            return None;
        }
        let r = parse(&w);
        let quote = w
            .get_child("quote", NS_OUTBOX)
            .map(|q| q.text())
            .unwrap_or_default();
        Some(Extras {
            replace: r.replace,
            reply: r.reply.map(|rep| (rep, quote)),
            file: r.file.map(Box::new),
        })
    }
}

/// The quote a reply's body starts with for clients without replies: the first lines of
/// the original, each prefixed with "> " (XEP-0393 block quote), then a line break.
pub fn reply_quote(original: &str) -> String {
    let mut q = String::new();
    for line in original.lines().take(4) {
        q.push_str("> ");
        q.extend(line.chars().take(200));
        q.push('\n');
    }
    q
}

/// Where a message goes: a contact (`chat`) or a room's occupants (`groupchat`, to the
/// room's bare JID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Chat,
    Groupchat,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Chat => "chat",
            MessageType::Groupchat => "groupchat",
        }
    }
}

fn message(to: &BareJid, kind: MessageType, id: &str) -> crate::elem::El {
    el("message", NS_CLIENT)
        .attr("to", to.as_str())
        .attr("type", kind.as_str())
        .attr("id", id)
}

/// XEP-0444 reactions (the complete set; empty withdraws), archived so that our other
/// devices and later catch-ups see them. In a room, `target` is the room's stanza-id.
pub fn reactions_stanza(
    to: &BareJid,
    kind: MessageType,
    id: &str,
    target: &str,
    emojis: &[String],
) -> Element {
    let mut r = el("reactions", NS_REACTIONS).attr("id", target);
    for e in emojis {
        r = r.child(el("reaction", NS_REACTIONS).text(e.clone()));
    }
    message(to, kind, id)
        .child(r)
        .child(el("store", NS_HINTS))
        .child(el("origin-id", NS_SID).attr("id", id))
        .build()
}

/// XEP-0424 retraction, with the recommended fallback body so that archives keep it. In a
/// room, `target` is the room's stanza-id.
pub fn retraction_stanza(to: &BareJid, kind: MessageType, id: &str, target: &str) -> Element {
    message(to, kind, id)
        .child(el("retract", NS_RETRACT).attr("id", target))
        .child(el("fallback", NS_FALLBACK).attr("for", NS_RETRACT))
        .child(
            el("body", NS_CLIENT)
                .text("/me retracted a previous message, but it's unsupported by your client."),
        )
        .child(el("store", NS_HINTS))
        .child(el("origin-id", NS_SID).attr("id", id))
        .build()
}

/// A standalone chat state notification: not worth storing anywhere (XEP-0334).
pub fn chat_state_stanza(to: &BareJid, state: ChatState) -> Element {
    el("message", NS_CLIENT)
        .attr("to", to.as_str())
        .attr("type", "chat")
        .child(el(state.name(), NS_CHAT_STATES))
        .child(el("no-store", NS_HINTS))
        .build()
}

/// XEP-0333 displayed marker, archived so that our other devices learn what was read.
pub fn displayed_stanza(to: &BareJid, id: &str, target: &str) -> Element {
    message(to, MessageType::Chat, id)
        .child(el("displayed", NS_MARKERS).attr("id", target))
        .child(el("store", NS_HINTS))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(children: &str) -> Element {
        format!(
            "<message xmlns='jabber:client' type='chat' from='a@b/c' id='m1'>{children}</message>"
        )
        .parse()
        .unwrap()
    }

    #[test]
    fn reads_every_payload() {
        let m = msg("<body>> hi\nyes</body>\
            <replace xmlns='urn:xmpp:message-correct:0' id='old'/>\
            <reply xmlns='urn:xmpp:reply:0' to='x@y/z' id='orig'/>\
            <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='5'/></fallback>\
            <markable xmlns='urn:xmpp:chat-markers:0'/>\
            <composing xmlns='http://jabber.org/protocol/chatstates'/>");
        let r = parse(&m);
        assert_eq!(r.replace.as_deref(), Some("old"));
        assert_eq!(
            r.reply,
            Some(Reply {
                to: Some("x@y/z".into()),
                id: "orig".into()
            })
        );
        assert!(r.markable);
        assert_eq!(r.chat_state, Some(ChatState::Composing));
        assert_eq!(r.strip_fallback("> hi\nyes", &[NS_REPLY]), "yes");
        assert_eq!(r.strip_fallback("> hi\nyes", &[NS_RETRACT]), "> hi\nyes");
    }

    #[test]
    fn reactions_are_deduplicated_and_bounded() {
        let r = parse(&msg("<reactions xmlns='urn:xmpp:reactions:0' id='t'>\
            <reaction>👍</reaction><reaction>👍</reaction><reaction> </reaction>\
            <reaction>🐢</reaction></reactions>"));
        assert_eq!(
            r.reactions,
            Some(Reactions {
                id: "t".into(),
                emojis: vec!["👍".into(), "🐢".into()]
            })
        );
        let many: String = (0..40)
            .map(|i| format!("<reaction>{i}</reaction>"))
            .collect();
        let r = parse(&msg(&format!(
            "<reactions xmlns='urn:xmpp:reactions:0' id='t'>{many}</reactions>"
        )));
        assert_eq!(r.reactions, None);
        let long = "x".repeat(MAX_REACTION_BYTES + 1);
        let r = parse(&msg(&format!(
            "<reactions xmlns='urn:xmpp:reactions:0' id='t'><reaction>{long}</reaction></reactions>"
        )));
        assert_eq!(r.reactions.map(|r| r.emojis.len()), Some(0));
    }

    #[test]
    fn two_reaction_sets_mean_none() {
        let r = parse(&msg(
            "<reactions xmlns='urn:xmpp:reactions:0' id='t'><reaction>a</reaction></reactions>\
            <reactions xmlns='urn:xmpp:reactions:0' id='t'><reaction>b</reaction></reactions>",
        ));
        assert_eq!(r.reactions, None);
        assert!(r.fallbacks.is_empty());
    }

    #[test]
    fn malformed_references_are_ignored_alone() {
        let long = "i".repeat(MAX_ID_BYTES + 1);
        let r = parse(&msg(&format!(
            "<replace xmlns='urn:xmpp:message-correct:0'/>\
             <retract xmlns='urn:xmpp:message-retract:1' id='{long}'/>\
             <reply xmlns='urn:xmpp:reply:0' id=''/>\
             <displayed xmlns='urn:xmpp:chat-markers:0' id='d'/>\
             <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='9' end='2'/></fallback>"
        )));
        assert_eq!(r.replace, None);
        assert_eq!(r.retract, None);
        assert_eq!(r.reply, None);
        assert_eq!(r.displayed.as_deref(), Some("d"));
        assert!(r.fallbacks.is_empty());
    }

    #[test]
    fn fallback_ranges_count_code_points_and_stay_in_the_body() {
        let r = parse(&msg(
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
            <body start='0' end='3'/><body start='100' end='200'/></fallback>",
        ));
        assert_eq!(r.strip_fallback("é🐢\nok", &[NS_REPLY]), "ok");
        let whole = parse(&msg(
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>",
        ));
        assert!(whole.whole_body_fallback(NS_RETRACT));
        assert_eq!(whole.strip_fallback("/me retracted", &[NS_RETRACT]), "");
    }

    #[test]
    fn extras_survive_the_outbox() {
        let quote = reply_quote("line one\nline two");
        assert_eq!(quote, "> line one\n> line two\n");
        let x = Extras {
            replace: Some("r1".into()),
            reply: Some((
                Reply {
                    to: Some("a@b".into()),
                    id: "o1".into(),
                },
                quote.clone(),
            )),
            file: None,
        };
        assert_eq!(Extras::from_xml(&x.to_xml()), Some(x.clone()));
        assert_eq!(Extras::from_xml(""), Some(Extras::default()));
        assert_eq!(Extras::from_xml("<x/>"), None);
        let wire = x.wire_body("b");
        let m = x.apply(msg(&format!("<body>{wire}</body>")));
        let r = parse(&m);
        assert_eq!(r.replace.as_deref(), Some("r1"));
        assert_eq!(r.strip_fallback(&wire, &[NS_REPLY]), "b");
    }

    #[test]
    fn standalone_stanzas_parse_back() {
        let to = BareJid::parse("a@b").unwrap();
        let s = reactions_stanza(&to, MessageType::Chat, "n", "t", &["👍".into()]);
        assert_eq!(s.attr("type"), Some("chat"));
        let r = parse(&s);
        assert_eq!(r.reactions.unwrap().emojis, vec!["👍".to_owned()]);
        let r = parse(&retraction_stanza(&to, MessageType::Chat, "n", "t"));
        assert_eq!(r.retract.as_deref(), Some("t"));
        assert!(r.whole_body_fallback(NS_RETRACT));
        for s in [
            reactions_stanza(&to, MessageType::Groupchat, "n", "t", &[]),
            retraction_stanza(&to, MessageType::Groupchat, "n", "t"),
        ] {
            assert_eq!(s.attr("type"), Some("groupchat"));
            assert_eq!(s.attr("to"), Some("a@b"));
            let origin = s.get_child("origin-id", NS_SID).and_then(|o| o.attr("id"));
            assert_eq!(origin, Some("n"), "the room's echo is recognised by it");
        }
        let r = parse(&chat_state_stanza(&to, ChatState::Paused));
        assert_eq!(r.chat_state, Some(ChatState::Paused));
        let r = parse(&displayed_stanza(&to, "n", "t"));
        assert_eq!(r.displayed.as_deref(), Some("t"));
    }
}
