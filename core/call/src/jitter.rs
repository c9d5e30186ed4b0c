//! A small reorder buffer for received RTP: puts packets back in sequence order, waits a
//! few packets for a late one, then declares it lost so playback moves on.

use std::collections::BTreeMap;

/// A jump this far from what we expect is a sender restart (or garbage), not reordering:
/// start over instead of waiting for or conceding thousands of packets.
const RESYNC_DISTANCE: u64 = 3000;

pub(crate) struct Reorder<T> {
    /// Extended (wrap-free) sequence number expected next.
    next: Option<u64>,
    highest: u64,
    buf: BTreeMap<u64, T>,
    depth: usize,
    pub(crate) lost: u64,
}

impl<T> Reorder<T> {
    /// `depth`: how many later packets may queue behind a missing one before it is given up.
    pub(crate) fn new(depth: usize) -> Self {
        Self {
            next: None,
            highest: 0,
            buf: BTreeMap::new(),
            depth: depth.max(1),
            lost: 0,
        }
    }

    /// The extended sequence number closest to the highest seen so far.
    fn extend(&self, seq: u16) -> u64 {
        let base = self.highest & !0xffff;
        let candidates = [
            base.wrapping_sub(0x1_0000) | u64::from(seq),
            base | u64::from(seq),
            (base + 0x1_0000) | u64::from(seq),
        ];
        candidates
            .into_iter()
            .filter(|&c| c < u64::MAX / 2)
            .min_by_key(|&c| c.abs_diff(self.highest))
            .unwrap_or(u64::from(seq))
    }

    /// Feeds one packet; returns the packets now deliverable, in order, each with the number
    /// of packets lost immediately before it.
    pub(crate) fn push(&mut self, seq: u16, item: T) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        let ext = match self.next {
            // Start the extended space well above zero so a first packet followed by a
            // slightly earlier one does not underflow.
            None => (1 << 32) | u64::from(seq),
            Some(_) => self.extend(seq),
        };
        let next = *self.next.get_or_insert(ext);
        if ext.abs_diff(next) > RESYNC_DISTANCE {
            self.buf.clear();
            self.next = Some(ext);
            self.highest = ext;
            self.buf.insert(ext, item);
            self.drain(&mut out);
            return out;
        }
        if ext < next {
            // Late (already given up) or a duplicate.
            return out;
        }
        self.highest = self.highest.max(ext);
        self.buf.entry(ext).or_insert(item);
        self.drain(&mut out);
        out
    }

    fn drain(&mut self, out: &mut Vec<(u64, T)>) {
        loop {
            let Some(next) = self.next else { return };
            if let Some(item) = self.buf.remove(&next) {
                out.push((0, item));
                self.next = Some(next + 1);
                continue;
            }
            if self.buf.len() <= self.depth {
                return;
            }
            let Some((&first, _)) = self.buf.iter().next() else {
                return;
            };
            let gap = first - next;
            self.lost += gap;
            if let Some(item) = self.buf.remove(&first) {
                out.push((gap, item));
            }
            self.next = Some(first + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(v: Vec<(u64, u16)>) -> Vec<(u64, u16)> {
        v
    }

    #[test]
    fn in_order_passes_straight_through_and_wraps() {
        let mut r = Reorder::new(3);
        for s in [65534u16, 65535, 0, 1] {
            assert_eq!(seqs(r.push(s, s)), vec![(0, s)]);
        }
        assert_eq!(r.lost, 0);
    }

    #[test]
    fn reorders_and_gives_up_on_lost() {
        let mut r = Reorder::new(2);
        assert_eq!(r.push(10, 10), vec![(0, 10)]);
        assert!(r.push(12, 12).is_empty());
        assert_eq!(r.push(11, 11), vec![(0, 11), (0, 12)]);
        // 13 never comes.
        assert!(r.push(14, 14).is_empty());
        assert!(r.push(15, 15).is_empty());
        assert_eq!(r.push(16, 16), vec![(1, 14), (0, 15), (0, 16)]);
        assert_eq!(r.lost, 1);
        // Too late and duplicates are dropped.
        assert!(r.push(13, 13).is_empty());
        assert!(r.push(16, 16).is_empty());
        // A wild jump resynchronises.
        assert_eq!(r.push(40_000, 1), vec![(0, 1)]);
        assert_eq!(r.push(40_001, 2), vec![(0, 2)]);
    }
}
