//! The session driver: one task owns the XML stream; the `Session` handle sends commands to
//! it and events come back on a channel. Stream management (XEP-0198) acknowledgements are
//! turned into `Event::Acked` so that the layer above marks messages "sent" only once the
//! server has them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_xmpp::xmlstream::ReadError;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

use crate::connect::{read_error, stream_error_condition, Connection, Negotiated, SmBase, Stream};
use crate::elem::el;
use crate::error::{ConnectError, RequestError};
use crate::inbound::{self, Context, Event, RosterItem, NS_CARBONS, NS_PING, NS_RECEIPTS, NS_SID};
use crate::jid::{split_bare, BareJid};
use crate::limits::{Cuts, DropReason};
use crate::mam::{self, CatchUp};

enum Cmd {
    /// A stanza; when tracked, `Event::Acked(id)` follows the server's acknowledgement.
    Send {
        stanza: Element,
        track: Option<String>,
    },
    Iq {
        stanza: Element,
        reply: oneshot::Sender<Result<Element, RequestError>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
    /// The durable `h` may have risen (see `Session::confirm_handled`).
    Confirmed,
    /// A query of our archive (see `Session::archive_query`).
    Archive {
        from: ArchiveFrom,
    },
    /// A whole catch-up (see `Session::catch_up`).
    CatchUp {
        from: ArchiveFrom,
    },
    /// One page of a conversation's history before what we hold (see
    /// `Session::history_before`).
    History {
        with: BareJid,
        before: HistoryBefore,
    },
    /// After a resumption: what the previous stream left unacknowledged (see
    /// `Session::carry_over`).
    Replay {
        acked: Vec<String>,
        resend: Vec<(Option<String>, Element)>,
    },
    /// XEP-0352 `<active/>` or `<inactive/>`.
    ClientState {
        active: bool,
    },
    /// Probe the link now (see `Session::check_link`).
    Probe,
    /// A query of a room's archive (see `Session::room_history`).
    RoomHistory {
        room: BareJid,
        query: crate::muc::RoomQuery,
    },
}

/// What a caller persists to resume the session later (XEP-0198), see
/// Where a query of our own archive (XEP-0313) starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveFrom {
    /// After the message with this archive id (stanza-id).
    After(String),
    /// From the oldest message kept.
    Start,
    /// The newest page: what a device logging in for the first time shows, including the
    /// messages that waited for it (with Bind2 the server leaves those to the archive).
    Recent,
    /// Only to learn the newest archive id: its message is not delivered.
    Latest,
    /// From this archive time on (ms since the epoch), for when the cursor's message is no
    /// longer in the archive.
    Since(i64),
    /// Only to learn the oldest message the archive still holds (`Event::ArchiveOldest`):
    /// when it is newer than where we left off, the archive expired what lay between.
    Oldest,
}

/// Where a page of older history ends (see [`Session::history_before`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryBefore {
    /// Before the message with this archive id.
    Id(String),
    /// Before this time (ms since the epoch): for conversations whose oldest message we
    /// hold has no archive id (sent from here, never read back).
    Time(i64),
    /// The newest page.
    Now,
}

/// Messages per archive page: enough to catch up a typical gap in one round trip, small
/// enough that a page stays well under the servers' stanza limits.
const ARCHIVE_PAGE: u32 = 100;

/// Coming to the foreground probes the link unless the server sent something this recently.
const WAKE_PROBE_AFTER: Duration = Duration::from_secs(2);

/// [`Session::sm_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmState {
    /// `<enabled id>`; `None`: the session is not resumable.
    pub id: Option<String>,
    /// `<enabled location>`, if the server gave one.
    pub location: Option<String>,
    /// Durable inbound `h`: stanzas received and handled (confirmed, in durable mode).
    pub inbound_handled: u32,
    /// Outbound stanzas sent in this stream (counting from the old stream's after a resume).
    pub outbound_sent: u32,
    /// Outbound stanzas the server acknowledged.
    pub outbound_acked: u32,
}

/// Inbound counters shared between the driver and the handles.
#[derive(Debug)]
struct Inbound {
    /// Stanzas received (wrapping, XEP-0198 arithmetic).
    count: u32,
    /// Seqs of received stanzas that produced events not yet confirmed, ascending.
    unconfirmed: VecDeque<u32>,
    sent: u32,
    acked: u32,
    /// What the driver left unacknowledged when it ended (oldest first; the first is
    /// outbound stanza `acked + 1`), for the next stream to resume with.
    left: VecDeque<(Option<String>, Element)>,
}

impl Inbound {
    /// The longest prefix of received stanzas that is handled.
    fn handled(&self) -> u32 {
        match self.unconfirmed.front() {
            Some(seq) => seq.wrapping_sub(1),
            None => self.count,
        }
    }

    fn confirm(&mut self, seq: u32) {
        // `a <= b` in wrapping arithmetic (a window of 2^31).
        while let Some(&front) = self.unconfirmed.front() {
            if (seq.wrapping_sub(front) as i32) >= 0 {
                self.unconfirmed.pop_front();
            } else {
                break;
            }
        }
    }
}

enum EventTx {
    Plain(mpsc::UnboundedSender<Event>),
    Durable(mpsc::UnboundedSender<(u32, Event)>),
}

impl EventTx {
    fn send(&self, seq: u32, ev: Event) {
        match self {
            EventTx::Plain(tx) => {
                let _ = tx.send(ev);
            }
            EventTx::Durable(tx) => {
                let _ = tx.send((seq, ev));
            }
        }
    }
}

/// Handle to a running session. Cheap to clone; the session ends when `close` is called,
/// the connection fails, or every handle is dropped.
#[derive(Clone)]
pub struct Session {
    tx: mpsc::UnboundedSender<Cmd>,
    pub negotiated: Negotiated,
    own: BareJid,
    request_timeout: Duration,
    inbound: Arc<Mutex<Inbound>>,
    /// Rooms we are in or joining (see `Session::muc_join`), shared with the driver.
    rooms: Rooms,
}

type Rooms = Arc<Mutex<HashSet<BareJid>>>;

impl Session {
    /// Starts the driver. Inbound stanzas count as handled (XEP-0198 `h`) as soon as the
    /// driver has read them. After a resumption the counters continue from
    /// `conn.negotiated.sm_base`.
    pub fn start(conn: Connection, own: BareJid) -> (Session, mpsc::UnboundedReceiver<Event>) {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let base = conn.negotiated.sm_base;
        (
            Self::spawn(conn, own, base, EventTx::Plain(ev_tx), false),
            ev_rx,
        )
    }

    /// Starts the driver in durable-acknowledgement mode: each event comes with the inbound
    /// stanza count `seq` of the stanza that caused it, and the server is told a stanza was
    /// handled (`<a h/>`) only once the caller has called [`Session::confirm_handled`] with
    /// that `seq` (or a later one) — after committing what the event carried. Stanzas that
    /// cause no event count as handled at once, but never past an unconfirmed one. Events
    /// not caused by an inbound stanza (`Acked`, `Closed`) carry `seq` 0 and need no
    /// confirmation. `base`: [`Negotiated::sm_base`] of `conn` (after a resumption, the old
    /// stream's counters).
    pub fn start_durable(
        conn: Connection,
        own: BareJid,
        base: SmBase,
    ) -> (Session, mpsc::UnboundedReceiver<(u32, Event)>) {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        (
            Self::spawn(conn, own, base, EventTx::Durable(ev_tx), true),
            ev_rx,
        )
    }

    fn spawn(
        conn: Connection,
        own: BareJid,
        base: SmBase,
        events: EventTx,
        durable: bool,
    ) -> Session {
        let (tx, rx) = mpsc::unbounded_channel();
        let negotiated = conn.negotiated.clone();
        let request_timeout = conn.step_timeout;
        let inbound = Arc::new(Mutex::new(Inbound {
            count: base.inbound,
            unconfirmed: VecDeque::new(),
            sent: base.outbound,
            acked: base.outbound,
            left: VecDeque::new(),
        }));
        let rooms: Rooms = Arc::default();
        let driver = Driver {
            rooms: rooms.clone(),
            room_queries: HashMap::new(),
            own: own.clone(),
            own_full: negotiated.bound_jid.clone(),
            sm: negotiated.sm_id.is_some() || negotiated.sm_inline,
            stream: conn.stream,
            cuts: conn.cuts,
            events,
            durable,
            pending_iqs: HashMap::new(),
            archive_queries: HashMap::new(),
            catch_up: None,
            history_queries: HashMap::new(),
            dropped_queries: HashSet::new(),
            oldest_found: HashMap::new(),
            unacked: VecDeque::new(),
            unsent: Vec::new(),
            sent_count: base.outbound,
            acked_count: base.outbound,
            inbound: inbound.clone(),
            last_answered: None,
            probe_sent: None,
            probe_ping: None,
            last_read: Instant::now(),
            active: true,
            csi: negotiated.csi,
            foreground_keepalive: conn.foreground_keepalive,
            probe_timeout: request_timeout,
            counting: true,
        };
        tokio::spawn(driver.run(rx, conn.early));
        Session {
            tx,
            negotiated,
            own,
            request_timeout,
            inbound,
            rooms,
        }
    }

    /// Durable mode: everything the events up to `seq` carried is committed. Confirms every
    /// event with a seq up to and including `seq` (so confirm in delivery order).
    pub fn confirm_handled(&self, seq: u32) {
        let raised = {
            let mut st = self.lock();
            let before = st.handled();
            st.confirm(seq);
            st.handled() != before
        };
        if raised {
            let _ = self.tx.send(Cmd::Confirmed);
        }
    }

    /// Queries our archive (XEP-0313) for one page of one-to-one messages. The page's
    /// messages arrive as `Event::Message` (with `archived`), then `Event::ArchivePage`
    /// (or `Event::ArchiveFailed`). Results nobody asked for are dropped.
    pub fn archive_query(&self, from: ArchiveFrom) -> Result<(), RequestError> {
        self.tx
            .send(Cmd::Archive { from })
            .map_err(|_| RequestError::Closed)
    }

    /// Reads our archive (XEP-0313) from `from` up to its newest message, as
    /// [`crate::mam`] describes: the messages arrive as `Event::Message` (with `archived`)
    /// in archive order, each page's end as `Event::ArchivePage` (the last with
    /// `complete`), progress as `Event::ArchiveProgress`, a refusal as
    /// `Event::ArchiveFailed` (which ends it). A new catch-up replaces one still running.
    /// `Latest` and `Recent` are single pages, as with [`Session::archive_query`].
    pub fn catch_up(&self, from: ArchiveFrom) -> Result<(), RequestError> {
        self.tx
            .send(Cmd::CatchUp { from })
            .map_err(|_| RequestError::Closed)
    }

    /// Reads one page of our archive's messages with `with`, the newest before `before`:
    /// history older than what we hold, for scrolling back. The messages arrive as
    /// `Event::Message` with `archived` and `scrollback`, then `Event::HistoryPage`.
    pub fn history_before(
        &self,
        with: &BareJid,
        before: HistoryBefore,
    ) -> Result<(), RequestError> {
        self.tx
            .send(Cmd::History {
                with: with.clone(),
                before,
            })
            .map_err(|_| RequestError::Closed)
    }

    /// Probes the link now (the network changed under it): the session ends if no answer
    /// comes within the step timeout.
    pub fn check_link(&self) -> Result<(), RequestError> {
        self.tx.send(Cmd::Probe).map_err(|_| RequestError::Closed)
    }

    /// Whether the user is looking. The server is told (XEP-0352) when it supports it
    /// ([`Negotiated::csi`](crate::Negotiated)): while inactive it may hold back what is
    /// not urgent (presence, chat states) and deliver it in batches, which saves a phone's
    /// radio and battery. The link is probed more often while active
    /// ([`ConnectConfig::foreground_keepalive`](crate::ConnectConfig)), and at once on
    /// becoming active after a silence: a link that died while the phone slept is found
    /// when the user opens the app, not minutes later. A session starts active.
    pub fn set_active(&self, active: bool) -> Result<(), RequestError> {
        self.tx
            .send(Cmd::ClientState { active })
            .map_err(|_| RequestError::Closed)
    }

    /// Call on a new session, before sending anything on it, with the session that ended
    /// before it. After a resumption, what the server acknowledged in `<resumed h/>` is
    /// reported as `Event::Acked` and the messages and presences it did not receive are
    /// sent again, first and in their order (XEP-0198 §5). After a fresh login, only the
    /// untracked messages (receipts and the like) are sent again: tracked ones are the
    /// caller's to re-send, and the new session announces its own presence. IQs never are:
    /// their callers were already told the session closed. Returns the tracking ids taken
    /// care of here, so the caller does not re-send those from its own outbox.
    pub fn carry_over(&self, previous: &Session) -> Vec<String> {
        if self.negotiated.resumed.is_some() {
            // The server kept our occupants in their rooms along with the stream.
            let rooms = lock_rooms(&previous.rooms).clone();
            lock_rooms(&self.rooms).extend(rooms);
        }
        let (acked_before, left) = {
            let mut st = previous.lock();
            (st.acked, std::mem::take(&mut st.left))
        };
        let Some(h) = self.negotiated.resumed else {
            let resend: Vec<_> = left
                .into_iter()
                .filter(|(track, stanza)| {
                    track.is_none() && stanza.is("message", ns::JABBER_CLIENT)
                })
                .collect();
            if !resend.is_empty() {
                let _ = self.tx.send(Cmd::Replay {
                    acked: Vec::new(),
                    resend,
                });
            }
            return Vec::new();
        };
        let received = h.wrapping_sub(acked_before) as usize;
        if received > left.len() {
            // The server claims stanzas the previous stream never sent: nothing is known.
            tracing::warn!("resumed h beyond what the previous stream sent");
            return Vec::new();
        }
        let mut ids = Vec::new();
        let mut acked = Vec::new();
        let mut resend = Vec::new();
        for (i, (track, stanza)) in left.into_iter().enumerate() {
            if let Some(id) = &track {
                ids.push(id.clone());
            }
            if i < received {
                acked.extend(track);
            } else if !stanza.is("iq", ns::JABBER_CLIENT) {
                resend.push((track, stanza));
            }
        }
        let _ = self.tx.send(Cmd::Replay { acked, resend });
        ids
    }

    /// The current durable inbound `h`.
    pub fn handled(&self) -> u32 {
        self.lock().handled()
    }

    /// What to persist for a later resumption ([`crate::ResumeRequest`]).
    pub fn sm_state(&self) -> SmState {
        let st = self.lock();
        SmState {
            id: self
                .negotiated
                .sm_id
                .clone()
                .filter(|_| self.negotiated.sm_resumable),
            location: self.negotiated.sm_location.clone(),
            inbound_handled: st.handled(),
            outbound_sent: st.sent,
            outbound_acked: st.acked,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbound> {
        self.inbound.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn own_jid(&self) -> &BareJid {
        &self.own
    }

    /// Whether `room`'s stanzas are taken (see [`Session::muc_join`]).
    pub fn in_room(&self, room: &BareJid) -> bool {
        lock_rooms(&self.rooms).contains(room)
    }

    pub(crate) fn track_room(&self, room: &BareJid, on: bool) {
        let mut rooms = lock_rooms(&self.rooms);
        if on {
            rooms.insert(room.clone());
        } else {
            rooms.remove(room);
        }
    }

    pub(crate) fn send_room_history(
        &self,
        room: &BareJid,
        query: crate::muc::RoomQuery,
    ) -> Result<(), RequestError> {
        self.tx
            .send(Cmd::RoomHistory {
                room: room.clone(),
                query,
            })
            .map_err(|_| RequestError::Closed)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether both handles drive the same stream.
    pub fn same_stream(&self, other: &Session) -> bool {
        self.tx.same_channel(&other.tx)
    }

    pub(crate) fn send(&self, stanza: Element, track: Option<String>) -> Result<(), RequestError> {
        self.tx
            .send(Cmd::Send { stanza, track })
            .map_err(|_| RequestError::Closed)
    }

    /// Sends a caller-built IQ (for bots, tools and tests) and returns the response as XML.
    /// The `id` is replaced by a fresh one so the response can be matched.
    pub async fn iq_xml(&self, iq: &str) -> Result<String, RequestError> {
        let parsed: Element = iq
            .parse()
            .map_err(|_| RequestError::BadArgument("not well-formed XML".into()))?;
        if !parsed.is("iq", ns::JABBER_CLIENT)
            || !matches!(parsed.attr("type"), Some("get") | Some("set"))
        {
            return Err(RequestError::BadArgument(
                "not an iq get/set in jabber:client".into(),
            ));
        }
        let payload = parsed
            .children()
            .next()
            .cloned()
            .ok_or_else(|| RequestError::BadArgument("iq without payload".into()))?;
        let type_ = if parsed.attr("type") == Some("get") {
            "get"
        } else {
            "set"
        };
        let reply = self.iq(type_, parsed.attr("to"), payload).await?;
        Ok(String::from(&reply))
    }

    /// Sends a caller-built stanza as is (for bots, tools and tests).
    pub fn send_xml(&self, stanza: &str) -> Result<(), RequestError> {
        let parsed: Element = stanza
            .parse()
            .map_err(|_| RequestError::BadArgument("not well-formed XML".into()))?;
        if parsed.ns() != ns::JABBER_CLIENT
            || !matches!(parsed.name(), "message" | "presence" | "iq")
        {
            return Err(RequestError::BadArgument(
                "not a stanza in jabber:client".into(),
            ));
        }
        self.send(parsed, None)
    }

    /// Sends an IQ and waits for the matching response from the entity it was sent to.
    pub(crate) async fn iq(
        &self,
        type_: &'static str,
        to: Option<&str>,
        payload: Element,
    ) -> Result<Element, RequestError> {
        self.iq_queued(type_, to, payload)?.await
    }

    /// Queues an IQ now; the returned future waits for its response.
    pub(crate) fn iq_queued(
        &self,
        type_: &'static str,
        to: Option<&str>,
        payload: Element,
    ) -> Result<
        impl std::future::Future<Output = Result<Element, RequestError>> + Send + 'static,
        RequestError,
    > {
        let id = crate::new_id();
        let stanza = el("iq", ns::JABBER_CLIENT)
            .attr("type", type_)
            .attr("id", &id)
            .attr_opt("to", to)
            .child(payload)
            .build();
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(Cmd::Iq {
                stanza,
                reply: reply_tx,
            })
            .map_err(|_| RequestError::Closed)?;
        let timeout = self.request_timeout;
        Ok(async move {
            match tokio::time::timeout(timeout, reply_rx).await {
                Err(_) => Err(RequestError::Timeout),
                Ok(Err(_)) => Err(RequestError::Closed),
                Ok(Ok(r)) => r,
            }
        })
    }

    /// A 1:1 chat message with a receipt request; `id` doubles as the XEP-0359 origin-id so
    /// that receipts, carbons and re-sends all name the same message.
    pub fn send_chat(&self, to: &BareJid, body: &str, id: &str) -> Result<(), RequestError> {
        if body.is_empty() {
            return Err(RequestError::BadArgument("empty message body".into()));
        }
        self.send(
            chat_stanza(to, body, id, &Default::default()),
            Some(id.to_owned()),
        )
    }

    /// Re-sends a stanza built earlier (outbox), tracked under `id`.
    pub fn send_raw_tracked(&self, stanza_xml: &str, id: &str) -> Result<(), RequestError> {
        let stanza: Element = stanza_xml
            .parse()
            .map_err(|_| RequestError::BadArgument("stored stanza is not XML".into()))?;
        self.send(stanza, Some(id.to_owned()))
    }

    pub fn send_receipt(&self, to_full: &str, id: &str) -> Result<(), RequestError> {
        // type "chat", as the message it answers: when that device has gone offline, the
        // server then hands the receipt to the account's other devices or offline storage
        // (RFC 6121 §8.5.3.2.1) instead of dropping it.
        let stanza = el("message", ns::JABBER_CLIENT)
            .attr("to", to_full)
            .attr("type", "chat")
            .attr("id", crate::new_id())
            .child(el("received", NS_RECEIPTS).attr("id", id))
            .child(el("store", inbound::NS_HINTS))
            .build();
        self.send(stanza, None)
    }

    pub fn send_presence(
        &self,
        to: Option<&BareJid>,
        type_: Option<&'static str>,
    ) -> Result<(), RequestError> {
        let mut stanza = el("presence", ns::JABBER_CLIENT)
            .attr_opt("to", to.map(BareJid::as_str))
            .attr_opt("type", type_);
        if to.is_none() && type_.is_none() {
            // Our available presence carries our capabilities (XEP-0115), which is how
            // the server learns our +notify features.
            stanza = stanza.child(
                el("c", inbound::NS_CAPS)
                    .attr("hash", "sha-1")
                    .attr("node", inbound::CAPS_NODE)
                    .attr("ver", inbound::caps_ver()),
            );
        }
        self.send(stanza.build(), None)
    }

    /// A subscription request to `to`, with our nickname when we have one (XEP-0172
    /// §4.2). A nickname that could not be published is left out, not the request.
    pub fn send_subscribe(&self, to: &BareJid, nick: Option<&str>) -> Result<(), RequestError> {
        let mut stanza = el("presence", ns::JABBER_CLIENT)
            .attr("to", to.as_str())
            .attr("type", "subscribe");
        match nick.map(|n| crate::profile::nick_element(Some(n))) {
            Some(Ok(nick)) => stanza = stanza.child(nick),
            Some(Err(_)) => tracing::debug!("nickname not sendable; subscribing without it"),
            None => {}
        }
        self.send(stanza.build(), None)
    }

    /// A directed presence tracked under `id` (also its stanza id): `Event::Acked` follows
    /// once the server has processed it.
    pub fn send_presence_tracked(
        &self,
        to: &BareJid,
        type_: &'static str,
        id: &str,
    ) -> Result<(), RequestError> {
        let stanza = el("presence", ns::JABBER_CLIENT)
            .attr("to", to.as_str())
            .attr("type", type_)
            .attr("id", id)
            .build();
        self.send(stanza, Some(id.to_owned()))
    }

    pub async fn fetch_roster(&self) -> Result<Vec<RosterItem>, RequestError> {
        let reply = self
            .iq("get", None, el("query", ns::ROSTER).build())
            .await?;
        let query = reply
            .get_child("query", ns::ROSTER)
            .ok_or_else(|| RequestError::Unexpected("roster result without query".into()))?;
        Ok(inbound::parse_roster_items(query))
    }

    pub async fn roster_set(&self, jid: &BareJid, name: Option<&str>) -> Result<(), RequestError> {
        let item = el("item", ns::ROSTER)
            .attr("jid", jid.as_str())
            .attr_opt("name", name);
        self.iq("set", None, el("query", ns::ROSTER).child(item).build())
            .await
            .map(|_| ())
    }

    pub async fn roster_remove(&self, jid: &BareJid) -> Result<(), RequestError> {
        let item = el("item", ns::ROSTER)
            .attr("jid", jid.as_str())
            .attr("subscription", "remove");
        self.iq("set", None, el("query", ns::ROSTER).child(item).build())
            .await
            .map(|_| ())
    }

    pub async fn enable_carbons(&self) -> Result<(), RequestError> {
        self.iq("set", None, el("enable", NS_CARBONS).build())
            .await
            .map(|_| ())
    }

    pub async fn ping(&self) -> Result<(), RequestError> {
        let domain = self.own.domain().to_owned();
        self.iq("get", Some(&domain), el("ping", NS_PING).build())
            .await
            .map(|_| ())
    }

    /// XEP-0077 password change on the logged-in account.
    pub async fn change_password(&self, new_password: &str) -> Result<(), RequestError> {
        if new_password.is_empty() {
            return Err(RequestError::BadArgument("empty password".into()));
        }
        let local = self.own.local().unwrap_or_default().to_owned();
        let q = el("query", ns::REGISTER)
            .child(el("username", ns::REGISTER).text(local))
            .child(el("password", ns::REGISTER).text(new_password.to_owned()));
        let domain = self.own.domain().to_owned();
        self.iq("set", Some(&domain), q.build()).await.map(|_| ())
    }

    /// XEP-0077 account removal. The server usually closes the stream right after.
    pub async fn delete_account(&self) -> Result<(), RequestError> {
        let q = el("query", ns::REGISTER).child(el("remove", ns::REGISTER));
        let domain = self.own.domain().to_owned();
        match self.iq("set", Some(&domain), q.build()).await {
            Ok(_) | Err(RequestError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Closes the stream politely and waits until the driver is done.
    pub async fn close(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Cmd::Close { done: done_tx }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
        }
    }
}

pub fn chat_stanza(to: &BareJid, body: &str, id: &str, extras: &crate::rich::Extras) -> Element {
    let m = el("message", ns::JABBER_CLIENT)
        .attr("to", to.as_str())
        .attr("type", "chat")
        .attr("id", id)
        .child(el("body", ns::JABBER_CLIENT).text(body.to_owned()))
        .child(el("request", NS_RECEIPTS))
        .child(el("origin-id", NS_SID).attr("id", id))
        .child(el("markable", "urn:xmpp:chat-markers:0"))
        .child(el("active", crate::rich::NS_CHAT_STATES))
        .build();
    extras.apply(m)
}

/// Serialized form of a stanza for the outbox.
pub fn stanza_to_string(el: &Element) -> String {
    String::from(el)
}

struct PendingIq {
    to: Option<String>,
    reply: oneshot::Sender<Result<Element, RequestError>>,
}

fn lock_rooms(rooms: &Rooms) -> std::sync::MutexGuard<'_, HashSet<BareJid>> {
    rooms.lock().unwrap_or_else(|e| e.into_inner())
}

struct Driver {
    rooms: Rooms,
    /// Queries of rooms' archives in flight, by query id (also the IQ id).
    room_queries: HashMap<String, (BareJid, crate::muc::RoomQuery)>,
    own: BareJid,
    own_full: String,
    sm: bool,
    stream: Stream,
    /// What the inbound limits cut (see `crate::limits`).
    cuts: Arc<Cuts>,
    events: EventTx,
    durable: bool,
    pending_iqs: HashMap<String, PendingIq>,
    /// Our archive queries in flight, by query id (also the IQ id).
    archive_queries: HashMap<String, ArchiveFrom>,
    catch_up: Option<CatchUp>,
    /// Scroll-back queries in flight, by query id (also the IQ id): with whom.
    history_queries: HashMap<String, BareJid>,
    /// Queries of a catch-up that ended before they were answered: their results are
    /// dropped without a warning.
    dropped_queries: HashSet<String>,
    /// The result of an `ArchiveFrom::Oldest` query, until its `<fin/>`.
    oldest_found: HashMap<String, (String, Option<i64>)>,
    /// Stanzas sent but not yet acknowledged, with their tracking ids, oldest first.
    unacked: VecDeque<(Option<String>, Element)>,
    /// Stanzas handed to the session that never went out because the stream broke first.
    unsent: Vec<(Option<String>, Element)>,
    sent_count: u32,
    acked_count: u32,
    inbound: Arc<Mutex<Inbound>>,
    /// The `h` of our last `<a/>`, once we sent one.
    last_answered: Option<u32>,
    /// When the unanswered probe of the link went out.
    probe_sent: Option<Instant>,
    /// Without stream management the probe is an XEP-0199 ping with this id.
    probe_ping: Option<String>,
    /// When the server last sent anything.
    last_read: Instant,
    /// The user is looking (see `Session::set_active`).
    active: bool,
    csi: bool,
    foreground_keepalive: Duration,
    /// No data this long after a probe: the link is dead.
    probe_timeout: Duration,
    /// Off while replaying stanzas that arrived before stream management was enabled: they
    /// are not part of the XEP-0198 count.
    counting: bool,
}

impl Driver {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inbound> {
        self.inbound.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one inbound stanza; returns its seq.
    fn count_inbound(&mut self) -> u32 {
        let mut st = self.lock();
        st.count = st.count.wrapping_add(1);
        st.count
    }

    fn sync_outbound(&self) {
        let (sent, acked) = (self.sent_count, self.acked_count);
        let mut st = self.lock();
        st.sent = sent;
        st.acked = acked;
    }

    /// When the keepalive timer next fires: the end of a probe's wait, or (in the
    /// foreground) the silence after which the link is probed. In the background the
    /// stream's own read timeout (`ConnectConfig::keepalive`) triggers the probe.
    fn keepalive_deadline(&self) -> Instant {
        match self.probe_sent {
            // Data still coming in after the probe (a backlog on a slow link) gives the
            // answer more time.
            Some(sent) => sent.max(self.last_read) + self.probe_timeout,
            None if self.active => self.last_read + self.foreground_keepalive,
            // Far enough not to matter, near enough not to overflow.
            None => Instant::now() + Duration::from_secs(86_400),
        }
    }

    /// Writes one element. A write that cannot finish (the link died with our send buffer
    /// full) ends the session like an unanswered probe, instead of hanging until TCP gives
    /// up many minutes later.
    async fn send_raw(&mut self, el: &Element) -> Result<(), ConnectError> {
        tokio::time::timeout(self.probe_timeout, self.stream.send(el))
            .await
            .map_err(|_| ConnectError::Timeout("write"))??;
        Ok(())
    }

    async fn send_ack(&mut self) -> Result<(), ConnectError> {
        let h = self.lock().handled();
        self.send_raw(&el_a(h)).await?;
        self.last_answered = Some(h);
        Ok(())
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>, early: Vec<Element>) {
        self.counting = false;
        for el in early {
            if let Err(e) = self.handle_inbound(el).await {
                self.events.send(0, Event::Closed(e));
                return;
            }
        }
        self.counting = true;
        let reason = loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => {
                        let _ = self.stream.shutdown().await;
                        break ConnectError::Network("session dropped".into());
                    }
                    Some(Cmd::Close { done }) => {
                        self.flush_acks_before_close().await;
                        let _ = self.stream.shutdown().await;
                        let _ = done.send(());
                        break ConnectError::Network("closed by us".into());
                    }
                    Some(cmd) => if let Err(e) = self.handle_cmd(cmd).await { break e },
                },
                () = tokio::time::sleep_until(self.keepalive_deadline()) => {
                    if let Some(sent) = self.probe_sent {
                        // Data after the probe but no answer to it: the link works, the
                        // server is not reading us.
                        break ConnectError::Timeout(if self.last_read > sent {
                            ConnectError::UNREAD_STREAM
                        } else {
                            "keepalive probe"
                        });
                    }
                    if let Err(e) = self.probe().await { break e }
                },
                item = self.stream.next() => match item {
                    Some(Ok(el)) => if let Err(e) = self.handle_inbound(el).await { break e },
                    Some(Err(ReadError::SoftTimeout)) => {
                        if let Err(e) = self.probe().await { break e }
                    }
                    Some(Err(ReadError::ParseError(e))) => {
                        // Non-fatal: the element is dropped, the stream goes on.
                        tracing::warn!(error = %e, "dropping unparsable element");
                        self.count_inbound();
                    }
                    Some(Err(ReadError::HardError(e))) => break read_error(e),
                    Some(Err(ReadError::StreamFooterReceived)) | None => {
                        break ConnectError::Network("server closed the stream".into())
                    }
                },
            }
        };
        for (_, p) in self.pending_iqs.drain() {
            let _ = p.reply.send(Err(RequestError::Closed));
        }
        // Whatever was handed to the session after the stream broke (a receipt, say) goes
        // to the next stream rather than nowhere; from here on, handing over fails.
        cmds.close();
        while let Ok(cmd) = cmds.try_recv() {
            match cmd {
                Cmd::Send { stanza, track } => self.unsent.push((track, stanza)),
                Cmd::Replay { acked, resend } => {
                    for id in acked {
                        self.events.send(0, Event::Acked { id });
                    }
                    self.unsent.extend(resend);
                }
                Cmd::Iq { reply, .. } => {
                    let _ = reply.send(Err(RequestError::Closed));
                }
                Cmd::Close { done } => {
                    let _ = done.send(());
                }
                Cmd::Confirmed
                | Cmd::Archive { .. }
                | Cmd::CatchUp { .. }
                | Cmd::History { .. }
                | Cmd::RoomHistory { .. }
                | Cmd::ClientState { .. }
                | Cmd::Probe => {}
            }
        }
        let mut left = std::mem::take(&mut self.unacked);
        // Never sent, so after what the server may have counted.
        left.extend(self.unsent.drain(..));
        self.lock().left = left;
        tracing::debug!(reason = %reason, "session ended");
        self.events.send(0, Event::Closed(reason));
    }

    async fn flush_acks_before_close(&mut self) {
        if self.sm {
            // Tell the server what we handled before it ends the session (XEP-0198 §4).
            let _ = self.send_ack().await;
        }
        if self.sm && !self.unacked.is_empty() {
            let _ = self.send_raw(&el("r", ns::SM).build()).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while !self.unacked.is_empty() {
                match tokio::time::timeout_at(deadline, self.stream.next()).await {
                    Ok(Some(Ok(el))) => {
                        if self.handle_inbound(el).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
    }

    async fn write(&mut self, stanza: &Element, track: Option<String>) -> Result<(), ConnectError> {
        if self.sm {
            // Counted before the write: a write that fails may still have reached the server,
            // and either way the stanza is among what the next stream resumes or re-sends.
            self.sent_count = self.sent_count.wrapping_add(1);
            self.unacked.push_back((track, stanza.clone()));
            self.sync_outbound();
            return self.send_raw(stanza).await;
        }
        self.send_raw(stanza).await?;
        if let Some(id) = track {
            // Without stream management a flushed write is the best evidence we can get.
            self.events.send(0, Event::Acked { id });
        }
        Ok(())
    }

    async fn handle_cmd(&mut self, cmd: Cmd) -> Result<(), ConnectError> {
        match cmd {
            Cmd::Send { stanza, track } => {
                let request_ack = self.sm && track.is_some();
                self.write(&stanza, track).await?;
                if request_ack {
                    self.send_raw(&el("r", ns::SM).build()).await?;
                }
            }
            Cmd::Iq { stanza, reply } => {
                let id = stanza.attr("id").unwrap_or_default().to_owned();
                let to = stanza.attr("to").map(str::to_owned);
                self.write(&stanza, None).await?;
                self.pending_iqs.insert(id, PendingIq { to, reply });
            }
            Cmd::Confirmed => {
                // Proactive `<a/>` when an `<r/>` was answered lower than what is now handled.
                let h = self.lock().handled();
                if self.sm && self.last_answered.is_some_and(|a| a != h) {
                    self.send_ack().await?;
                }
            }
            Cmd::Archive { from } => self.archive_page(from).await?,
            Cmd::CatchUp { from } => {
                if matches!(from, ArchiveFrom::Latest | ArchiveFrom::Recent) {
                    return self.archive_page(from).await;
                }
                if let Some(mut old) = self.catch_up.take() {
                    self.dropped_queries.extend(old.take_abandoned());
                    self.dropped_queries.extend(old.in_flight_ids());
                }
                let (c, q) = CatchUp::start(from, mam::WINDOWS);
                self.catch_up = Some(c);
                self.write(&q.to_iq(), None).await?;
            }
            Cmd::History { with, before } => {
                let id = crate::new_id();
                let q = mam::history_query(&id, &with, &before);
                self.write(&q, None).await?;
                self.history_queries.insert(id, with);
            }
            Cmd::Replay { acked, resend } => {
                for id in acked {
                    self.events.send(0, Event::Acked { id });
                }
                let request_ack = self.sm && resend.iter().any(|(t, _)| t.is_some());
                let mut resend = resend.into_iter();
                while let Some((track, stanza)) = resend.next() {
                    if let Err(e) = self.write(&stanza, track).await {
                        // The rest never went out: the next stream carries it.
                        self.unsent.extend(resend);
                        return Err(e);
                    }
                }
                if request_ack {
                    self.send_raw(&el("r", ns::SM).build()).await?;
                }
            }
            Cmd::ClientState { active } => {
                let woke = active && !self.active;
                self.active = active;
                if self.csi {
                    // A nonza: not a stanza, so not counted by stream management.
                    let name = if active { "active" } else { "inactive" };
                    self.send_raw(&el(name, crate::connect::NS_CSI).build())
                        .await?;
                }
                // Anything read since a moment ago proves the link; otherwise ask.
                if woke && self.last_read.elapsed() >= WAKE_PROBE_AFTER {
                    self.probe().await?;
                }
            }
            Cmd::Probe => self.probe().await?,
            Cmd::RoomHistory { room, query } => {
                let id = crate::new_id();
                let iq = crate::muc::room_archive_query(&id, &room, &query);
                self.write(&iq, None).await?;
                self.room_queries.insert(id, (room, query));
            }
            Cmd::Close { .. } => {}
        }
        Ok(())
    }

    /// One page of our archive (see `Session::archive_query`).
    async fn archive_page(&mut self, from: ArchiveFrom) -> Result<(), ConnectError> {
        let id = crate::new_id();
        let mut set = el("set", inbound::NS_RSM);
        set = match &from {
            ArchiveFrom::After(after) => set
                .child(el("max", inbound::NS_RSM).text(ARCHIVE_PAGE.to_string()))
                .child(el("after", inbound::NS_RSM).text(after)),
            ArchiveFrom::Start => {
                set.child(el("max", inbound::NS_RSM).text(ARCHIVE_PAGE.to_string()))
            }
            ArchiveFrom::Recent => set
                .child(el("max", inbound::NS_RSM).text(ARCHIVE_PAGE.to_string()))
                .child(el("before", inbound::NS_RSM)),
            ArchiveFrom::Latest => set
                .child(el("max", inbound::NS_RSM).text("1"))
                .child(el("before", inbound::NS_RSM)),
            ArchiveFrom::Oldest => set.child(el("max", inbound::NS_RSM).text("1")),
            ArchiveFrom::Since(ms) => {
                let q = mam::Query {
                    id: id.clone(),
                    start_ms: Some(*ms),
                    end_ms: None,
                    after: None,
                    max: ARCHIVE_PAGE,
                };
                self.write(&q.to_iq(), None).await?;
                self.archive_queries.insert(id, from);
                return Ok(());
            }
        };
        let iq = el("iq", ns::JABBER_CLIENT)
            .attr("type", "set")
            .attr("id", &id)
            .child(el("query", inbound::NS_MAM).attr("queryid", &id).child(set))
            .build();
        self.write(&iq, None).await?;
        self.archive_queries.insert(id, from);
        Ok(())
    }

    /// The answer to a query of the running catch-up.
    async fn catch_up_answer(
        &mut self,
        seq: u32,
        id: &str,
        iq: &Element,
    ) -> Result<(), ConnectError> {
        let Some(c) = self.catch_up.as_mut() else {
            return Ok(());
        };
        let step = if iq.attr("type") == Some("result") {
            let (complete, last) = inbound::archive_fin(iq);
            let count = inbound::archive_fin_count(iq);
            let mut step = c.fin(id, complete, last, count, inbound::now_ms());
            let (received, total) = c.progress();
            if !step.done {
                step.emit.push(Event::ArchiveProgress { received, total });
            }
            step
        } else {
            match c.failed(id, inbound::stanza_error(iq).0) {
                Some(step) => step,
                None => return Ok(()),
            }
        };
        if step.done {
            if let Some(mut c) = self.catch_up.take() {
                self.dropped_queries.extend(c.take_abandoned());
            }
        }
        self.emit(seq, step.emit);
        for q in step.send {
            self.write(&q.to_iq(), None).await?;
        }
        Ok(())
    }

    async fn probe(&mut self) -> Result<(), ConnectError> {
        if self.probe_sent.is_some() {
            return Ok(());
        }
        self.probe_sent = Some(Instant::now());
        if self.sm {
            self.send_raw(&el("r", ns::SM).build()).await?;
        } else {
            let id = crate::new_id();
            self.probe_ping = Some(id.clone());
            let ping = el("iq", ns::JABBER_CLIENT)
                .attr("type", "get")
                .attr("id", id)
                .attr("to", self.own.domain())
                .child(el("ping", NS_PING))
                .build();
            self.write(&ping, None).await?;
        }
        Ok(())
    }

    /// Whether an IQ response comes from the entity we asked (RFC 6120 §8.1.2.1): a reply to
    /// a request without `to` may come from our bare JID or have no `from`.
    fn iq_reply_matches(&self, asked: Option<&str>, from: Option<&str>) -> bool {
        match (asked, from) {
            (None, None) => true,
            (None, Some(f)) => f == self.own.as_str() || f == self.own_full,
            (Some(a), Some(f)) => {
                a == f || split_bare(a) == split_bare(f) && !a.contains('/') && !f.contains('/')
            }
            (Some(a), None) => a == self.own.as_str() || a == self.own.domain(),
        }
    }

    async fn handle_inbound(&mut self, el: Element) -> Result<(), ConnectError> {
        self.last_read = Instant::now();
        if let Some(reason) = self.cuts.take_cut(&el) {
            return self.drop_cut(&el, reason).await;
        }
        if el.ns() == ns::SM {
            return self.handle_sm(&el).await;
        }
        if el.is("error", ns::STREAM) {
            return Err(ConnectError::Stream(stream_error_condition(&el)));
        }
        if el.ns() != ns::JABBER_CLIENT {
            return Ok(());
        }
        let seq = if self.counting {
            self.count_inbound()
        } else {
            0
        };
        if let Some(query) = inbound::archive_result_query_id(&el) {
            if let Some((room, q)) = self.room_queries.get(query) {
                let events = match crate::muc::parse_room_archive_result(&el, room) {
                    Some(mut m) => {
                        m.scrollback = matches!(q, crate::muc::RoomQuery::Before(_));
                        vec![Event::RoomMessage(Box::new(m))]
                    }
                    None => {
                        tracing::warn!("dropping a room archive result not from that room");
                        Vec::new()
                    }
                };
                self.emit(seq, events);
                return Ok(());
            }
            let rooms = self.rooms.clone();
            let rooms = lock_rooms(&rooms);
            let cx = Context {
                own: &self.own,
                own_full: &self.own_full,
                rooms: &rooms,
            };
            if let Some(c) = self.catch_up.as_mut().filter(|c| c.owns(query)) {
                let query = query.to_owned();
                if let Some((id, stamp)) = inbound::archive_result_meta(&el, &cx) {
                    let events = inbound::archived_message(&el, &cx);
                    let out = c.result(&query, id, stamp, events);
                    self.emit(seq, out);
                }
                return Ok(());
            }
            if self.history_queries.contains_key(query) {
                let mut events = inbound::archived_message(&el, &cx);
                for ev in &mut events {
                    if let Event::Message(m) = ev {
                        m.scrollback = true;
                    }
                }
                self.emit(seq, events);
                return Ok(());
            }
            if self.dropped_queries.contains(query) {
                return Ok(());
            }
            let events = match self.archive_queries.get(query) {
                Some(ArchiveFrom::Latest) => Vec::new(),
                Some(ArchiveFrom::Oldest) => {
                    let query = query.to_owned();
                    if let Some(found) = inbound::archive_result_meta(&el, &cx) {
                        self.oldest_found.insert(query, found);
                    }
                    Vec::new()
                }
                Some(_) => inbound::archived_message(&el, &cx),
                None => {
                    // XEP-0313 §Security: results we did not ask for could inject history.
                    tracing::warn!("dropping unsolicited archive result");
                    Vec::new()
                }
            };
            self.emit(seq, events);
            return Ok(());
        }
        if el.name() == "iq" && matches!(el.attr("type"), Some("result") | Some("error")) {
            let id = el.attr("id").unwrap_or_default();
            if self.probe_ping.as_deref() == Some(id) {
                self.probe_ping = None;
                self.probe_sent = None;
                return Ok(());
            }
            let from_room = self
                .room_queries
                .get(id)
                .is_some_and(|(room, _)| el.attr("from").is_some_and(|f| f == room.as_str()));
            if from_room {
                if let Some((room, query)) = self.room_queries.remove(id) {
                    let ev = if el.attr("type") == Some("result") {
                        let (complete, last) = inbound::archive_fin(&el);
                        Event::RoomHistoryPage {
                            room,
                            query,
                            complete,
                            last,
                        }
                    } else {
                        Event::RoomHistoryFailed {
                            room,
                            query,
                            condition: inbound::stanza_error(&el).0,
                        }
                    };
                    self.emit(seq, vec![ev]);
                }
                return Ok(());
            }
            if self.catch_up.as_ref().is_some_and(|c| c.owns(id))
                && self.iq_reply_matches(None, el.attr("from"))
            {
                let id = id.to_owned();
                return self.catch_up_answer(seq, &id, &el).await;
            }
            if self.history_queries.contains_key(id) && self.iq_reply_matches(None, el.attr("from"))
            {
                if let Some(with) = self.history_queries.remove(id) {
                    let ev = if el.attr("type") == Some("result") {
                        let (complete, _) = inbound::archive_fin(&el);
                        Event::HistoryPage { with, complete }
                    } else {
                        Event::HistoryFailed {
                            with,
                            condition: inbound::stanza_error(&el).0,
                        }
                    };
                    self.emit(seq, vec![ev]);
                }
                return Ok(());
            }
            if self.dropped_queries.remove(id) {
                return Ok(());
            }
            if self.archive_queries.contains_key(id) && self.iq_reply_matches(None, el.attr("from"))
            {
                if let Some(from) = self.archive_queries.remove(id) {
                    let found = self.oldest_found.remove(id);
                    let ev = if from == ArchiveFrom::Oldest && el.attr("type") == Some("result") {
                        let (id, stamp_ms) = found.unzip();
                        Event::ArchiveOldest {
                            id,
                            stamp_ms: stamp_ms.flatten(),
                        }
                    } else if el.attr("type") == Some("result") {
                        let (complete, last) = inbound::archive_fin(&el);
                        Event::ArchivePage {
                            from,
                            complete,
                            last,
                        }
                    } else {
                        Event::ArchiveFailed {
                            from,
                            condition: inbound::stanza_error(&el).0,
                        }
                    };
                    self.emit(seq, vec![ev]);
                }
                return Ok(());
            }
            let matches = self
                .pending_iqs
                .get(id)
                .map(|p| self.iq_reply_matches(p.to.as_deref(), el.attr("from")))
                .unwrap_or(false);
            if matches {
                if let Some(p) = self.pending_iqs.remove(id) {
                    let result = if el.attr("type") == Some("result") {
                        Ok(el)
                    } else {
                        let (condition, text) = inbound::stanza_error(&el);
                        Err(RequestError::Stanza { condition, text })
                    };
                    let _ = p.reply.send(result);
                }
            }
            return Ok(());
        }
        let rooms = self.rooms.clone();
        let outcome = {
            let rooms = lock_rooms(&rooms);
            let cx = Context {
                own: &self.own,
                own_full: &self.own_full,
                rooms: &rooms,
            };
            inbound::classify(&el, &cx)
        };
        // Events first: the stanza is counted already, and if writing the reply fails, what
        // it carried must still reach the caller rather than count as handled unseen.
        self.emit(seq, outcome.events);
        if let Some(reply) = outcome.reply {
            self.write(&reply, None).await?;
        }
        Ok(())
    }

    /// An element the inbound limits cut short: never taken for what it claims to be. A
    /// stanza still counts as handled (XEP-0198), or every resumption would bring it back; an
    /// IQ request is refused, so that its sender is not left waiting.
    async fn drop_cut(&mut self, cut: &Element, reason: DropReason) -> Result<(), ConnectError> {
        let stanza = cut.ns() == ns::JABBER_CLIENT;
        tracing::warn!(
            ?reason,
            stanza,
            "dropping an element over the inbound limits"
        );
        if stanza && self.counting {
            self.count_inbound();
        }
        self.events.send(0, Event::Dropped { reason });
        let request = cut.name() == "iq" && matches!(cut.attr("type"), Some("get") | Some("set"));
        if let (true, true, Some(id)) = (stanza, request, cut.attr("id")) {
            let reply = el("iq", ns::JABBER_CLIENT)
                .attr("type", "error")
                .attr("id", id)
                .attr_opt("to", cut.attr("from"))
                .child(
                    el("error", ns::JABBER_CLIENT)
                        .attr("type", "modify")
                        .child(el("policy-violation", ns::XMPP_STANZAS)),
                )
                .build();
            self.write(&reply, None).await?;
        }
        Ok(())
    }

    /// Hands events caused by inbound stanza `seq` to the caller (durable: unconfirmed
    /// until the caller says so).
    fn emit(&mut self, seq: u32, events: Vec<Event>) {
        if self.durable && !events.is_empty() {
            self.lock().unconfirmed.push_back(seq);
        }
        for ev in events {
            self.events.send(seq, ev);
        }
    }

    async fn handle_sm(&mut self, nonza: &Element) -> Result<(), ConnectError> {
        match nonza.name() {
            "r" => self.send_ack().await?,
            "a" => {
                // The answer to our `<r/>`, if one is out; what was already on its way to us
                // when the link died would not prove the link is alive.
                self.probe_sent = None;
                let h: u32 = nonza
                    .attr("h")
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| ConnectError::Protocol("<a/> without valid h".into()))?;
                let newly = h.wrapping_sub(self.acked_count);
                if newly as usize > self.unacked.len() {
                    // XEP-0198: acknowledging more than we sent is a fatal protocol error.
                    let err = el("error", ns::STREAM)
                        .child(el(
                            "undefined-condition",
                            "urn:ietf:params:xml:ns:xmpp-streams",
                        ))
                        .child(
                            el("handled-count-too-high", ns::SM)
                                .attr("h", h.to_string())
                                .attr("send-count", self.sent_count.to_string()),
                        )
                        .build();
                    let _ = self.send_raw(&err).await;
                    return Err(ConnectError::Protocol(
                        "server acknowledged more stanzas than we sent".into(),
                    ));
                }
                for _ in 0..newly {
                    if let Some((Some(id), _)) = self.unacked.pop_front() {
                        self.events.send(0, Event::Acked { id });
                    }
                }
                self.acked_count = h;
                self.sync_outbound();
            }
            "resumed" | "enabled" => {
                // Only ever valid as the answer to our own request during login.
                return Err(ConnectError::Protocol(format!(
                    "unsolicited <{}/> from the server",
                    nonza.name()
                )));
            }
            _ => {}
        }
        Ok(())
    }
}

fn el_a(h: u32) -> Element {
    el("a", ns::SM).attr("h", h.to_string()).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(count: u32) -> Inbound {
        Inbound {
            count,
            unconfirmed: VecDeque::new(),
            sent: 0,
            acked: 0,
            left: VecDeque::new(),
        }
    }

    #[test]
    fn handled_is_the_confirmed_prefix() {
        let mut st = inbound(0);
        // 1: no event, 2: event, 3: no event, 4: event, 5: no event.
        st.count = 5;
        st.unconfirmed.extend([2, 4]);
        assert_eq!(st.handled(), 1);
        st.confirm(3);
        assert_eq!(st.handled(), 3);
        st.confirm(1); // stale: no effect
        assert_eq!(st.handled(), 3);
        st.confirm(4);
        assert_eq!(st.handled(), 5);
    }

    #[test]
    fn counters_wrap() {
        let mut st = inbound(u32::MAX - 1);
        st.count = 1; // two more stanzas: u32::MAX and 0, then 1
        st.unconfirmed.extend([u32::MAX, 1]);
        assert_eq!(st.handled(), u32::MAX - 1);
        st.confirm(0);
        assert_eq!(st.handled(), 0);
        st.confirm(1);
        assert_eq!(st.handled(), 1);
    }
}
