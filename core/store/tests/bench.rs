//! Timing figures, not assertions: run with
//! `cargo test -p linnet-store --test bench -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::{base_ms, incoming, key, outgoing, Fixture};
use linnet_store::{NewMessage, Store};

#[test]
#[ignore = "benchmark: prints timings"]
fn fill_100k_then_open_and_list() {
    const CONVERSATIONS: u32 = 1_000;
    const PER_CONVERSATION: u32 = 100;
    let fx = Fixture::new();
    let t0 = base_ms();
    {
        let mut store = fx.open(1);
        let account = store.add_account("bench@example.org", "pw").unwrap();
        let started = Instant::now();
        store
            .transaction(|tx| {
                for c in 0..CONVERSATIONS {
                    let conv = tx
                        .conversation(account, &format!("peer{c}@example.org"), true)?
                        .ok_or(linnet_store::StoreError::NotFound("conversation"))?;
                    let batch: Vec<NewMessage> = (0..PER_CONVERSATION)
                        .map(|i| {
                            let ts = t0 + i64::from(i) * 60_000 + i64::from(c);
                            let body = format!("message {i} in conversation {c}");
                            let mut m = if i % 2 == 0 {
                                incoming(conv, &body, ts)
                            } else {
                                outgoing(conv, &body, ts)
                            };
                            m.origin_id = Some(format!("{c}-{i}"));
                            m
                        })
                        .collect();
                    tx.insert_messages(&batch)?;
                }
                Ok(())
            })
            .unwrap();
        let fill = started.elapsed();
        println!(
            "insert {} messages in one transaction: {:?} ({:.1} µs/message)",
            CONVERSATIONS * PER_CONVERSATION,
            fill,
            fill.as_secs_f64() * 1e6 / f64::from(CONVERSATIONS * PER_CONVERSATION)
        );
        let started = Instant::now();
        store.checkpoint().unwrap();
        println!("checkpoint: {:?}", started.elapsed());
    }
    println!(
        "file size: {:.1} MiB",
        std::fs::metadata(&fx.path).unwrap().len() as f64 / 1048576.0
    );

    for round in 0..3 {
        let started = Instant::now();
        let store = Store::open(&fx.path, &key(1)).unwrap();
        let opened = started.elapsed();
        let list = store.conversations().unwrap();
        let total = started.elapsed();
        assert_eq!(list.len(), CONVERSATIONS as usize);
        println!(
            "round {round}: open {opened:?}, open + conversations() {total:?} ({} rows)",
            list.len()
        );
        let started = Instant::now();
        let again = store.conversations().unwrap();
        println!(
            "  conversations() again, warm cache: {:?}",
            started.elapsed()
        );
        assert_eq!(again.len(), list.len());
        let started = Instant::now();
        let page = store.messages(list[0].id, None, 50).unwrap();
        println!("  newest page of 50: {:?}", started.elapsed());
        let started = Instant::now();
        let marked = store.mark_read(list[0].id, None).unwrap();
        println!(
            "  mark_read ({} messages): {:?}",
            marked.len(),
            started.elapsed()
        );
        assert_eq!(page.len(), 50);
    }

    // One commit (and WAL fsync, synchronous=FULL) per call: the live-message path.
    let store = Store::open(&fx.path, &key(1)).unwrap();
    let conv = store.conversations().unwrap()[0].id;
    let started = Instant::now();
    for i in 0..200 {
        store
            .insert_message(&incoming(conv, "live", t0 + 10_000_000 + i))
            .unwrap();
    }
    println!(
        "200 single-message commits: {:?} ({:.2} ms/commit)",
        started.elapsed(),
        started.elapsed().as_secs_f64() * 1e3 / 200.0
    );
}
