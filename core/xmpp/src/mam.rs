//! Catching up with our archive (XEP-0313) quickly: the first page is read after our cursor
//! as before; when it is not the last, the rest of the archive up to now is cut into time
//! windows that are read concurrently, each page by page. Results are handed on strictly
//! in archive order (a window's results wait until every earlier window is done), so the
//! caller sees exactly what a sequential read would show, only sooner: n windows in flight
//! cost about pages ÷ n round trips instead of pages. Servers page slowly from an id far
//! into a large archive (Prosody scans from the start of the filter to find it), and a time
//! filter starts each window near its own messages.
//!
//! Sans-I/O: the session driver feeds results and `<fin/>`s in and sends the queries and
//! events that come out.

use std::collections::{HashMap, HashSet};

use xmpp_parsers::minidom::Element;

use crate::elem::el;
use crate::inbound::{Event, NS_MAM, NS_RSM};
use crate::jid::BareJid;
use crate::session::{ArchiveFrom, HistoryBefore};

/// Results we ask for per page; servers clamp it to their own maximum (Prosody 50 by
/// default, ejabberd more), which is what we want: as few round trips as they allow.
pub(crate) const PAGE_MAX: u32 = 1000;
/// Windows read at once. Past a handful the server, not the round trip, is what limits.
pub(crate) const WINDOWS: usize = 8;
/// Results held back for windows that are not next in order before those windows stop
/// asking for more (a slow first window must not make us hold the whole archive).
const MAX_HELD: usize = 20_000;
const NS_DATA: &str = "jabber:x:data";

/// One query to send: an IQ set with this id (also the query id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub id: String,
    /// Inclusive time filters, ms since the epoch.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// RSM `<after>`: continue after this archive id.
    pub after: Option<String>,
    pub max: u32,
}

impl Query {
    pub(crate) fn to_iq(&self) -> Element {
        let mut query = el("query", NS_MAM).attr("queryid", &self.id);
        if self.start_ms.is_some() || self.end_ms.is_some() {
            let mut form = el("x", NS_DATA).attr("type", "submit").child(
                el("field", NS_DATA)
                    .attr("var", "FORM_TYPE")
                    .attr("type", "hidden")
                    .child(el("value", NS_DATA).text(NS_MAM)),
            );
            for (var, ms) in [("start", self.start_ms), ("end", self.end_ms)] {
                if let Some(ms) = ms {
                    form = form.child(
                        el("field", NS_DATA)
                            .attr("var", var)
                            .child(el("value", NS_DATA).text(format_stamp(ms))),
                    );
                }
            }
            query = query.child(form);
        }
        let mut set = el("set", NS_RSM).child(el("max", NS_RSM).text(self.max.to_string()));
        if let Some(after) = &self.after {
            set = set.child(el("after", NS_RSM).text(after));
        }
        el("iq", "jabber:client")
            .attr("type", "set")
            .attr("id", &self.id)
            .child(query.child(set))
            .build()
    }
}

/// Messages per page of older history: a screenful or two.
const HISTORY_PAGE: u32 = 50;

/// A page of our archive's messages with `with`, the newest before `before`.
pub(crate) fn history_query(id: &str, with: &BareJid, before: &HistoryBefore) -> Element {
    let mut form = el("x", NS_DATA)
        .attr("type", "submit")
        .child(
            el("field", NS_DATA)
                .attr("var", "FORM_TYPE")
                .attr("type", "hidden")
                .child(el("value", NS_DATA).text(NS_MAM)),
        )
        .child(
            el("field", NS_DATA)
                .attr("var", "with")
                .child(el("value", NS_DATA).text(with.as_str())),
        );
    if let HistoryBefore::Time(ms) = before {
        form = form.child(
            el("field", NS_DATA)
                .attr("var", "end")
                .child(el("value", NS_DATA).text(format_stamp(*ms))),
        );
    }
    let before_id = match before {
        HistoryBefore::Id(id) => id.as_str(),
        _ => "",
    };
    let set = el("set", NS_RSM)
        .child(el("max", NS_RSM).text(HISTORY_PAGE.to_string()))
        .child(el("before", NS_RSM).text(before_id));
    el("iq", "jabber:client")
        .attr("type", "set")
        .attr("id", id)
        .child(
            el("query", NS_MAM)
                .attr("queryid", id)
                .child(form)
                .child(set),
        )
        .build()
}

/// XEP-0082 date-time in UTC with milliseconds.
pub(crate) fn format_stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a proleptic Gregorian date (era arithmetic: 400-year cycles).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// What the driver does after feeding the planner.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Events to hand on now, in this order.
    pub emit: Vec<Event>,
    pub send: Vec<Query>,
    /// The catch-up is over (its last event is in `emit`).
    pub done: bool,
}

#[derive(Debug)]
enum Held {
    Result {
        id: String,
        stamp: Option<i64>,
        events: Vec<Event>,
    },
    PageEnd {
        last: Option<String>,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Its next query is to be sent (held back while too much is held).
    Ready,
    InFlight,
    Done,
}

#[derive(Debug)]
struct Window {
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    after: Option<String>,
    state: State,
    held: Vec<Held>,
    /// `<count>` of its first page (ejabberd gives it; Prosody does not by default).
    count: Option<u32>,
    results: u32,
    /// The newest archive time among its results so far.
    newest: Option<i64>,
}

/// A running catch-up (see the module documentation).
#[derive(Debug)]
pub(crate) struct CatchUp {
    from: ArchiveFrom,
    windows: Vec<Window>,
    /// The window whose results are handed on as they come.
    head: usize,
    in_flight: HashMap<String, usize>,
    /// Queries for a window's count only, by query id.
    counting: HashMap<String, usize>,
    /// Whether the first page has been planned from yet.
    split: bool,
    concurrency: usize,
    held: usize,
    /// Ids handed on from the window before the head that lie at or after the head's start:
    /// windows share their boundary instant, so these may come again.
    seen_at_boundary: HashSet<String>,
    /// The same, being gathered from the head for the window after it.
    head_tail: HashSet<String>,
    /// The archive id of the newest result handed on.
    last: Option<String>,
    done_results: u32,
    /// Results of the first page, for the total.
    first_page: u32,
    /// The newest archive time on the first page, and the ids handed on with it.
    first_newest: Option<i64>,
    first_tail: HashSet<String>,
    next_id: u32,
    prefix: String,
    abandoned: Vec<String>,
}

impl CatchUp {
    /// Starts a catch-up; `from` is `After`, `Start` or `Since` (the others are single
    /// pages and do not come here).
    pub(crate) fn start(from: ArchiveFrom, concurrency: usize) -> (CatchUp, Query) {
        let (after, start_ms) = match &from {
            ArchiveFrom::After(id) => (Some(id.clone()), None),
            ArchiveFrom::Since(ms) => (None, Some(*ms)),
            _ => (None, None),
        };
        let mut c = CatchUp {
            from,
            windows: vec![Window {
                start_ms,
                end_ms: None,
                after,
                state: State::Ready,
                held: Vec::new(),
                count: None,
                results: 0,
                newest: None,
            }],
            head: 0,
            in_flight: HashMap::new(),
            counting: HashMap::new(),
            split: false,
            concurrency: concurrency.max(1),
            held: 0,
            seen_at_boundary: HashSet::new(),
            head_tail: HashSet::new(),
            last: None,
            done_results: 0,
            first_page: 0,
            first_newest: None,
            first_tail: HashSet::new(),
            next_id: 0,
            prefix: crate::new_id(),
            abandoned: Vec::new(),
        };
        let q = c.query_for(0);
        (c, q)
    }

    pub(crate) fn owns(&self, query_id: &str) -> bool {
        self.in_flight.contains_key(query_id) || self.counting.contains_key(query_id)
    }

    pub(crate) fn in_flight_ids(&mut self) -> Vec<String> {
        let counting = self.counting.drain().map(|(id, _)| id);
        self.in_flight
            .drain()
            .map(|(id, _)| id)
            .chain(counting)
            .collect()
    }

    /// Queries still out when the catch-up ended early: their answers are to be dropped
    /// quietly.
    pub(crate) fn take_abandoned(&mut self) -> Vec<String> {
        std::mem::take(&mut self.abandoned)
    }

    fn count_query(&mut self, w: usize) -> Query {
        self.next_id += 1;
        let id = format!("{}-{}", self.prefix, self.next_id);
        self.counting.insert(id.clone(), w);
        let win = &self.windows[w];
        Query {
            id,
            start_ms: win.start_ms,
            end_ms: win.end_ms,
            after: None,
            max: 0,
        }
    }

    fn query_for(&mut self, w: usize) -> Query {
        self.next_id += 1;
        let id = format!("{}-{}", self.prefix, self.next_id);
        let win = &mut self.windows[w];
        win.state = State::InFlight;
        self.in_flight.insert(id.clone(), w);
        Query {
            id,
            start_ms: win.start_ms,
            end_ms: win.end_ms,
            after: win.after.clone(),
            max: PAGE_MAX,
        }
    }

    /// Messages received so far, and how many there are in all when the server counts.
    pub(crate) fn progress(&self) -> (u32, Option<u32>) {
        let received: u32 = self.windows.iter().map(|w| w.results).sum();
        let total = if self.split {
            // A window that ended empty may come without a count.
            self.windows[1..]
                .iter()
                .map(|w| match w.count {
                    None if w.state == State::Done && w.results == 0 => Some(0),
                    c => c,
                })
                .sum::<Option<u32>>()
                .map(|t| t.saturating_add(self.first_page).max(received))
        } else {
            None
        };
        (received, total)
    }

    /// One result of query `query_id`: its archive id, its archive time and its events.
    pub(crate) fn result(
        &mut self,
        query_id: &str,
        id: String,
        stamp: Option<i64>,
        events: Vec<Event>,
    ) -> Vec<Event> {
        let Some(&w) = self.in_flight.get(query_id) else {
            return Vec::new();
        };
        let win = &mut self.windows[w];
        win.results += 1;
        if let Some(s) = stamp {
            win.newest = Some(win.newest.map_or(s, |n| n.max(s)));
        }
        if w == self.head {
            let mut out = Vec::new();
            self.hand_on(&mut out, id, stamp, events);
            out
        } else {
            self.held += 1;
            self.windows[w]
                .held
                .push(Held::Result { id, stamp, events });
            Vec::new()
        }
    }

    fn hand_on(
        &mut self,
        out: &mut Vec<Event>,
        id: String,
        stamp: Option<i64>,
        events: Vec<Event>,
    ) {
        if self.seen_at_boundary.contains(&id) {
            return;
        }
        if !self.split {
            if let Some(s) = stamp {
                if self.first_newest.is_none_or(|n| s > n) {
                    self.first_newest = Some(s);
                    self.first_tail.clear();
                }
                if self.first_newest == Some(s) {
                    self.first_tail.insert(id.clone());
                }
            }
        }
        let next_start = self.windows.get(self.head + 1).and_then(|w| w.start_ms);
        if let (Some(s), Some(n)) = (stamp, next_start) {
            if s >= n {
                self.head_tail.insert(id.clone());
            }
        }
        self.done_results += 1;
        self.last = Some(id);
        out.extend(events);
    }

    fn page_end(&self, out: &mut Vec<Event>, last: Option<String>) {
        if last.is_some() {
            out.push(Event::ArchivePage {
                from: self.from.clone(),
                complete: false,
                last,
            });
        }
    }

    /// The `<fin/>` of query `query_id`.
    pub(crate) fn fin(
        &mut self,
        query_id: &str,
        complete: bool,
        last: Option<String>,
        count: Option<u32>,
        now_ms: i64,
    ) -> Step {
        let mut step = Step::default();
        if let Some(w) = self.counting.remove(query_id) {
            self.windows[w].count = self.windows[w].count.or(count);
            return step;
        }
        let Some(w) = self.in_flight.remove(query_id) else {
            return step;
        };
        let win = &mut self.windows[w];
        if win.count.is_none() {
            win.count = count;
        }
        let progressed = last.is_some() && last != win.after;
        let more = !complete && progressed;
        if more {
            win.after = last.clone();
            // The next page also starts at this page's newest time: a server that finds
            // `after` by scanning (Prosody's internal storage, from the start of the time
            // filter) then scans one instant, not the whole window so far.
            if let Some(n) = win.newest {
                win.start_ms = Some(win.start_ms.map_or(n, |s| s.max(n)));
            }
            win.state = State::Ready;
        } else {
            win.state = State::Done;
        }
        if w == self.head {
            self.page_end(&mut step.emit, last.clone());
        } else {
            self.windows[w]
                .held
                .push(Held::PageEnd { last: last.clone() });
        }
        if w == 0 && !self.split {
            self.split = true;
            self.first_page = self.windows[0].results;
            if more {
                self.plan_windows(now_ms);
                // A server that counts (ejabberd) answers a query for no results with
                // the count alone: asked first, the progress has its total from the start
                // (servers answer a session's queries in order).
                if count.is_some() {
                    for k in 1..self.windows.len() {
                        let q = self.count_query(k);
                        step.send.push(q);
                    }
                }
            }
        }
        self.advance(&mut step);
        self.send_ready(&mut step);
        step
    }

    /// After the first page, when more follows: the rest of the archive up to now in
    /// windows of equal time (the last one open, for clocks that disagree), starting at the
    /// first page's newest message.
    fn plan_windows(&mut self, now_ms: i64) {
        let Some(t0) = self.first_newest else {
            return;
        };
        let n = self.concurrency as i64;
        let span = (now_ms - t0) / n;
        if span < 1 {
            return;
        }
        // The first page's window goes on no further: the windows take over from t0.
        self.windows[0].state = State::Done;
        for k in 0..n {
            let start = t0 + k * span;
            let end = (k + 1 < n).then(|| t0 + (k + 1) * span);
            self.windows.push(Window {
                start_ms: Some(start),
                end_ms: end,
                after: None,
                state: State::Ready,
                held: Vec::new(),
                count: None,
                results: 0,
                newest: None,
            });
        }
        // What the first page handed on at t0 comes again in window 1.
        self.head_tail = std::mem::take(&mut self.first_tail);
    }

    /// Hands on what waited for windows that are now next in order.
    fn advance(&mut self, step: &mut Step) {
        while self.windows[self.head].state == State::Done
            && self.windows[self.head].held.is_empty()
        {
            if self.head + 1 >= self.windows.len() {
                if !step.done {
                    step.done = true;
                    step.emit.push(Event::ArchivePage {
                        from: self.from.clone(),
                        complete: true,
                        last: self.last.clone(),
                    });
                }
                return;
            }
            self.head += 1;
            self.seen_at_boundary = std::mem::take(&mut self.head_tail);
            let held = std::mem::take(&mut self.windows[self.head].held);
            self.held -= held
                .iter()
                .filter(|h| matches!(h, Held::Result { .. }))
                .count();
            for h in held {
                match h {
                    Held::Result { id, stamp, events } => {
                        self.hand_on(&mut step.emit, id, stamp, events)
                    }
                    Held::PageEnd { last } => self.page_end(&mut step.emit, last),
                }
            }
        }
    }

    fn send_ready(&mut self, step: &mut Step) {
        for w in self.head..self.windows.len() {
            if self.in_flight.len() >= self.concurrency {
                break;
            }
            if self.windows[w].state == State::Ready && (w == self.head || self.held < MAX_HELD) {
                let q = self.query_for(w);
                step.send.push(q);
            }
        }
    }

    /// The query `query_id` was refused: the catch-up ends where the results handed on
    /// end (the caller's cursor is there); what was held is dropped, to be read again.
    pub(crate) fn failed(&mut self, query_id: &str, condition: String) -> Option<Step> {
        if self.counting.remove(query_id).is_some() {
            // Only the progress's total is lost.
            return Some(Step::default());
        }
        self.in_flight.remove(query_id)?;
        let left = self.in_flight_ids();
        self.abandoned.extend(left);
        let mut step = Step {
            done: true,
            ..Step::default()
        };
        step.emit.push(Event::ArchiveFailed {
            from: self.from.clone(),
            condition,
        });
        Some(step)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_formatted_in_utc() {
        assert_eq!(format_stamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_stamp(1_714_557_600_123), "2024-05-01T10:00:00.123Z");
        assert_eq!(format_stamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_stamp(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    /// A result's event: tagged with its archive id, to check what is handed on.
    fn ev(id: &str) -> Vec<Event> {
        vec![Event::Acked { id: id.to_owned() }]
    }

    fn ids(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Acked { id } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    fn pages(events: &[Event]) -> Vec<(bool, Option<String>)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::ArchivePage { complete, last, .. } => Some((*complete, last.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_short_gap_is_one_query() {
        let (mut c, q) = CatchUp::start(ArchiveFrom::After("a0".into()), 4);
        assert_eq!(q.after.as_deref(), Some("a0"));
        assert_eq!((q.start_ms, q.end_ms), (None, None));
        let xml = String::from(&q.to_iq());
        assert!(
            xml.contains("<after>a0</after>") && !xml.contains("jabber:x:data"),
            "{xml}"
        );
        let mut out = c.result(&q.id, "a1".into(), Some(10), ev("a1"));
        out.extend(c.result(&q.id, "a2".into(), Some(11), ev("a2")));
        let step = c.fin(&q.id, true, Some("a2".into()), None, 1000);
        assert!(step.done && step.send.is_empty());
        out.extend(step.emit);
        assert_eq!(ids(&out), ["a1", "a2"]);
        assert_eq!(
            pages(&out),
            [(false, Some("a2".into())), (true, Some("a2".into()))]
        );
        assert_eq!(c.progress(), (2, Some(2)));
    }

    #[test]
    fn windows_are_handed_on_in_order_without_their_shared_instant_twice() {
        let (mut c, q) = CatchUp::start(ArchiveFrom::Start, 4);
        let mut out = Vec::new();
        out.extend(c.result(&q.id, "p1".into(), Some(1000), ev("p1")));
        out.extend(c.result(&q.id, "p2".into(), Some(2000), ev("p2")));
        let step = c.fin(&q.id, false, Some("p2".into()), Some(999), 10_000);
        assert!(!step.done);
        out.extend(step.emit);
        // The server counts: each window's count is asked for first.
        let (counts, reads): (Vec<_>, Vec<_>) = step.send.iter().partition(|q| q.max == 0);
        assert_eq!(counts.len(), 4);
        assert_eq!(step.send[0].max, 0, "counts go out first");
        for (q, n) in counts.iter().zip([2, 2, 2, 1]) {
            let s = c.fin(&q.id, true, None, Some(n), 10_000);
            assert!(s.emit.is_empty() && s.send.is_empty() && !s.done);
        }
        assert_eq!(c.progress(), (2, Some(2 + 2 + 2 + 2 + 1)));
        // Four windows of 2000 ms from the first page's newest message on; the last open.
        let w: Vec<_> = reads.iter().map(|q| (q.start_ms, q.end_ms)).collect();
        assert_eq!(
            w,
            [
                (Some(2000), Some(4000)),
                (Some(4000), Some(6000)),
                (Some(6000), Some(8000)),
                (Some(8000), None)
            ]
        );
        let xml = String::from(&reads[1].to_iq());
        assert!(xml.contains("1970-01-01T00:00:04.000Z"), "{xml}");
        let q: Vec<String> = reads.iter().map(|q| q.id.clone()).collect();
        // The last window answers first: held back.
        assert!(c
            .result(&q[3], "d1".into(), Some(9000), ev("d1"))
            .is_empty());
        let s = c.fin(&q[3], true, Some("d1".into()), Some(1), 10_000);
        assert!(s.emit.is_empty() && !s.done);
        // The second window has two pages; its boundary message comes again in the third.
        assert!(c
            .result(&q[1], "b1".into(), Some(4500), ev("b1"))
            .is_empty());
        let s = c.fin(&q[1], false, Some("b1".into()), Some(2), 10_000);
        assert_eq!(s.send.len(), 1);
        assert_eq!(s.send[0].after.as_deref(), Some("b1"));
        // From the newest time seen, so that the server finds `after` at once.
        assert_eq!(s.send[0].start_ms, Some(4500));
        let q1b = s.send[0].id.clone();
        assert!(c.result(&q1b, "b2".into(), Some(6000), ev("b2")).is_empty());
        let s = c.fin(&q1b, true, Some("b2".into()), Some(2), 10_000);
        assert!(s.emit.is_empty());
        assert!(c
            .result(&q[2], "b2".into(), Some(6000), ev("b2"))
            .is_empty());
        assert!(c
            .result(&q[2], "c1".into(), Some(7000), ev("c1"))
            .is_empty());
        let s = c.fin(&q[2], true, Some("c1".into()), Some(2), 10_000);
        assert!(s.emit.is_empty());
        // The first window: p2 again (it shares the first page's last instant), then a1.
        out.extend(c.result(&q[0], "p2".into(), Some(2000), ev("p2")));
        out.extend(c.result(&q[0], "a1".into(), Some(3000), ev("a1")));
        // Results are counted as they come, the repeated boundary message too, as the
        // servers count it.
        assert_eq!(c.progress(), (9, Some(9)));
        let s = c.fin(&q[0], true, Some("a1".into()), Some(2), 10_000);
        assert!(s.done);
        out.extend(s.emit);
        assert_eq!(ids(&out), ["p1", "p2", "a1", "b1", "b2", "c1", "d1"]);
        let p = pages(&out);
        assert_eq!(p.last(), Some(&(true, Some("d1".into()))));
        assert!(p[..p.len() - 1].iter().all(|(complete, _)| !complete));
    }

    #[test]
    fn a_refused_window_ends_the_catch_up_where_it_was_handed_on() {
        let (mut c, q) = CatchUp::start(ArchiveFrom::After("x".into()), 2);
        c.result(&q.id, "p1".into(), Some(1000), ev("p1"));
        let s = c.fin(&q.id, false, Some("p1".into()), None, 5000);
        assert_eq!(s.send.len(), 2);
        c.result(&s.send[1].id, "late".into(), Some(4000), ev("late"));
        let f = c
            .failed(&s.send[0].id, "internal-server-error".into())
            .unwrap();
        assert!(f.done);
        assert!(ids(&f.emit).is_empty(), "nothing held is handed on");
        assert!(matches!(f.emit.last(), Some(Event::ArchiveFailed { .. })));
        assert_eq!(c.take_abandoned(), [s.send[1].id.clone()]);
        // An answer to a query it never sent is not its business.
        assert!(c.failed("other", "x".into()).is_none());
        assert!(!c.owns("other"));
    }

    #[test]
    fn a_page_that_does_not_move_ends_its_window() {
        let (mut c, q) = CatchUp::start(ArchiveFrom::After("x".into()), 2);
        // A server that says "not complete" but gives nothing: no endless loop.
        let s = c.fin(&q.id, false, None, None, 5000);
        assert!(s.done && s.send.is_empty());
        let (mut c, q) = CatchUp::start(ArchiveFrom::After("x".into()), 2);
        let s = c.fin(&q.id, false, Some("x".into()), None, 5000);
        assert!(s.done && s.send.is_empty());
    }

    #[test]
    fn a_clock_behind_the_archive_reads_on_in_one_window() {
        let (mut c, q) = CatchUp::start(ArchiveFrom::Start, 4);
        c.result(&q.id, "p1".into(), Some(9000), ev("p1"));
        let s = c.fin(&q.id, false, Some("p1".into()), None, 5000);
        assert_eq!(s.send.len(), 1);
        assert_eq!(s.send[0].after.as_deref(), Some("p1"));
        assert_eq!((s.send[0].start_ms, s.send[0].end_ms), (Some(9000), None));
    }

    #[test]
    fn history_queries_ask_for_the_page_before() {
        let with = BareJid::parse("bob@example.org").unwrap();
        let xml = String::from(&history_query("q", &with, &HistoryBefore::Id("s1".into())));
        assert!(
            xml.contains("<before>s1</before>") && xml.contains("bob@example.org"),
            "{xml}"
        );
        let xml = String::from(&history_query("q", &with, &HistoryBefore::Time(0)));
        assert!(
            xml.contains("var=\"end\"") || xml.contains("var='end'"),
            "{xml}"
        );
        assert!(
            xml.contains("<before/>") || xml.contains("<before></before>"),
            "{xml}"
        );
    }
}
