//! History gaps and scroll-back state as stored (schema v7).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use linnet_store::HistoryGap;

#[test]
fn gaps_are_kept_per_account_and_merged_when_seen_again() {
    let fx = Fixture::new();
    let store = fx.open(1);
    let me = store.add_account("me@example.org", "pw").unwrap();
    let other = store.add_account("other@example.org", "pw").unwrap();
    let gap = |after_ms, before_ms| HistoryGap {
        after_ms,
        before_ms,
    };
    store.add_history_gap(me, gap(100, 200)).unwrap();
    // The same gap again, then one overlapping it: still one stretch.
    store.add_history_gap(me, gap(100, 200)).unwrap();
    store.add_history_gap(me, gap(150, 250)).unwrap();
    // Empty and inverted ones are no gaps.
    store.add_history_gap(me, gap(300, 300)).unwrap();
    store.add_history_gap(me, gap(400, 350)).unwrap();
    store.add_history_gap(me, gap(500, 600)).unwrap();
    store.add_history_gap(other, gap(0, 50)).unwrap();
    assert_eq!(
        store.history_gaps(me).unwrap(),
        [gap(100, 250), gap(500, 600)]
    );
    assert_eq!(store.history_gaps(other).unwrap(), [gap(0, 50)]);
    // Bounded: the newest are kept.
    for i in 0..150 {
        store
            .add_history_gap(other, gap(1000 + i * 10, 1005 + i * 10))
            .unwrap();
    }
    let kept = store.history_gaps(other).unwrap();
    assert_eq!(kept.len(), 100);
    assert_eq!(kept.last(), Some(&gap(2490, 2495)));
    store.remove_account(me).unwrap();
    assert!(store.history_gaps(me).unwrap().is_empty());
}

#[test]
fn scrolling_back_to_the_start_is_remembered() {
    let fx = Fixture::new();
    let store = fx.open(1);
    let me = store.add_account("me@example.org", "pw").unwrap();
    let c = store
        .conversation(me, "peer@example.org", true)
        .unwrap()
        .unwrap();
    assert!(!store.history_complete(c).unwrap());
    assert_eq!(store.oldest_message(c).unwrap(), None);
    let t = base_ms();
    store
        .insert_message(&incoming(c, "second", t + 10))
        .unwrap();
    store.insert_message(&incoming(c, "first", t)).unwrap();
    assert_eq!(store.oldest_message(c).unwrap().unwrap().body, "first");
    store.set_history_complete(c, true).unwrap();
    assert!(store.history_complete(c).unwrap());
    drop(store);
    assert!(fx.open(1).history_complete(c).unwrap());
}
