//! `linnet demo`: two fresh accounts on a local server become contacts and chat; then each
//! side's conversation is printed from its own snapshot. Narration goes to stderr.

use std::sync::Arc;
use std::time::Duration;

use linnet_client::{
    AccountId, ChatListSnapshot, Client, ClientError, ConversationSnapshot, DbKey, DeliveryState,
    Direction, Encryption, EncryptionPolicy, ServerOverride, SubscriptionRequestItem,
};
use tokio::sync::watch;

use crate::args::Args;
use crate::{bad, options, ConvTx};

struct Side {
    name: &'static str,
    client: Client,
    account: AccountId,
    jid: String,
    list: watch::Receiver<Arc<ChatListSnapshot>>,
    _sub: linnet_client::Subscription,
}

impl Side {
    async fn wait_list(
        &self,
        what: &str,
        pred: impl Fn(&ChatListSnapshot) -> bool,
    ) -> Result<(), ClientError> {
        let mut rx = self.list.clone();
        let fut = async {
            loop {
                if pred(&rx.borrow_and_update()) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(ClientError::Internal("snapshots ended".into()));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .map_err(|_| {
                ClientError::Network(format!("{}: timed out waiting for {what}", self.name))
            })?
    }

    async fn conversation(&self, peer: &str) -> Result<Arc<ConversationSnapshot>, ClientError> {
        crate::conversation_snapshot(&self.client, self.account, peer).await
    }

    async fn wait_conversation(
        &self,
        peer: &str,
        what: &str,
        pred: impl Fn(&ConversationSnapshot) -> bool,
    ) -> Result<(), ClientError> {
        let conv = self.client.open_conversation(self.account, peer)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _sub = self.client.subscribe_conversation(conv, ConvTx(tx))?;
        let fut = async {
            while let Some(s) = rx.recv().await {
                if pred(&s) {
                    return Ok(());
                }
            }
            Err(ClientError::Internal("snapshots ended".into()))
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .map_err(|_| {
                ClientError::Network(format!("{}: timed out waiting for {what}", self.name))
            })?
    }
}

async fn side(
    name: &'static str,
    args: &Args,
    dir: &std::path::Path,
    domain: &str,
    server: Option<ServerOverride>,
) -> Result<Side, ClientError> {
    let key = DbKey::generate()?;
    let client = Client::open(&dir.join(name), &key, options(args)?)?;
    let suffix: String = linnet_client_id();
    let jid = format!("{name}-{suffix}@{domain}");
    // The password exists only for this run: the demo accounts are throwaway.
    let password = format!("demo-{}", linnet_client_id());
    eprintln!("• registering {jid} (in-band: user name and password only)");
    let account = client.register_account(&jid, &password, server).await?;
    client.login(account).await?;
    let (tx, list) = watch::channel(client.chat_list());
    let sub = client.subscribe_chat_list(move |s: Arc<ChatListSnapshot>| {
        tx.send_replace(s);
    });
    Ok(Side {
        name,
        client,
        account,
        jid,
        list,
        _sub: sub,
    })
}

fn linnet_client_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:06x}",
        (nanos ^ std::process::id().rotate_left(13)) & 0xff_ffff
    )
}

/// A hex fingerprint in groups of eight, as clients show them.
fn group(hex: &str) -> String {
    hex.as_bytes()
        .chunks(8)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn clock(ms: i64) -> String {
    let s = (ms / 1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn render(viewer: &Side, peer_label: &str, snap: &ConversationSnapshot) -> String {
    let mut out = format!(
        "\n── {} sees ({} ↔ {}) ──\n",
        viewer.name,
        viewer.jid,
        snap.name.as_deref().unwrap_or(&snap.peer)
    );
    for m in &snap.messages {
        let (who, arrow) = match m.direction {
            Direction::Outgoing => ("me", "→"),
            Direction::Incoming => (peer_label, "←"),
        };
        let state = match (m.direction, m.state) {
            (Direction::Incoming, _) => "",
            (_, DeliveryState::Pending) => "  … pending",
            (_, DeliveryState::Sent) => "  ✓ sent",
            (_, DeliveryState::Delivered) => "  ✓✓ delivered",
            (_, DeliveryState::Read) => "  ✓✓ read",
            (_, DeliveryState::Failed) => "  ✗ failed",
        };
        let lock = match m.encryption {
            Encryption::Omemo2 => "🔒 OMEMO 2  ",
            Encryption::Omemo03 => "🔒 OMEMO 0.3",
            Encryption::Plain => "⚠ plaintext",
        };
        out.push_str(&format!(
            "  {}  {:<5} {} [{lock}] {}{}\n",
            clock(m.timestamp_ms),
            who,
            arrow,
            m.body,
            state
        ));
    }
    out.push_str(&format!(
        "  (snapshot version {}, unread {})\n",
        snap.version, snap.unread
    ));
    out
}

/// A subscription request as shown: the JID, and the nickname it claims beside it.
fn request_line(r: &SubscriptionRequestItem) -> String {
    match &r.nick {
        Some(nick) => format!("{} (\"{nick}\")", r.jid),
        None => r.jid.clone(),
    }
}

pub async fn run(args: &Args) -> Result<(), ClientError> {
    let domain = args
        .opt("domain")
        .ok_or_else(|| bad("demo needs --domain (the local server's domain)"))?;
    let server = crate::server(args)?;
    let dir = std::path::PathBuf::from(args.opt("data-dir").unwrap_or("linnet-demo"));
    let _ = std::fs::remove_dir_all(&dir);
    let alice = side("alice", args, &dir, domain, server.clone()).await?;
    let bob = side("bob", args, &dir, domain, server).await?;

    eprintln!("• alice calls herself \"Alice\" and adds bob as a contact");
    alice
        .client
        .set_nickname(alice.account, Some("Alice"))
        .await?;
    alice
        .client
        .add_contact(alice.account, &bob.jid, Some("Bob"))
        .await?;
    let a_jid = alice.jid.clone();
    bob.wait_list("alice's request", |s| {
        s.accounts
            .iter()
            .any(|a| a.subscription_requests.iter().any(|r| r.jid == a_jid))
    })
    .await?;
    let request = bob
        .list
        .borrow()
        .accounts
        .iter()
        .flat_map(|a| &a.subscription_requests)
        .find(|r| r.jid == a_jid)
        .map(request_line)
        .unwrap_or_default();
    eprintln!("• bob sees the request of {request} and approves it");
    bob.client.approve_contact(bob.account, &alice.jid).await?;
    for (me, other) in [(&alice, &bob.jid), (&bob, &alice.jid)] {
        let mut tries = 0;
        while !me
            .client
            .contacts(me.account)?
            .iter()
            .any(|c| &c.jid == other && c.subscription == "both")
        {
            tries += 1;
            if tries > 300 {
                return Err(ClientError::Network("subscription did not complete".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // End-to-end encrypted or not at all: each waits for the other's OMEMO device, and both
    // conversations are set to OMEMO, so that nothing could go in the clear.
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let device = other.client.own_omemo_device(other.account)?;
        let mut tries = 0;
        while !me
            .client
            .omemo_devices(me.account, &other.jid)?
            .iter()
            .any(|d| d.device_id == device && d.active)
        {
            tries += 1;
            if tries > 500 {
                return Err(ClientError::Network(format!(
                    "{} never saw {}'s OMEMO device",
                    me.name, other.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let conv = me.client.open_conversation(me.account, &other.jid)?;
        me.client
            .set_encryption_policy(conv, EncryptionPolicy::Omemo)?;
    }
    eprintln!("• they are mutual contacts and know each other's OMEMO devices; chatting, end-to-end encrypted");
    let lines = [
        (&alice, &bob, "Hi Bob! No phone number needed 🎉"),
        (&bob, &alice, "Hi Alice! Got it loud and clear."),
        (&alice, &bob, "See you on the train — it survives tunnels."),
    ];
    for (from, to, text) in lines {
        let id = from.client.send_message(from.account, &to.jid, text)?;
        to.wait_conversation(&from.jid, "the message", |s| {
            s.messages.iter().any(|m| m.body == text)
        })
        .await?;
        from.wait_conversation(&to.jid, "the receipt", |s| {
            s.messages
                .iter()
                .any(|m| m.id == id && m.state == DeliveryState::Delivered)
        })
        .await?;
    }
    let a_view = alice.conversation(&bob.jid).await?;
    let b_view = bob.conversation(&alice.jid).await?;
    print!("{}", render(&alice, "bob", &a_view));
    print!("{}", render(&bob, "alice", &b_view));
    // What each would compare with the other to verify (by QR code or reading aloud).
    println!();
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        for d in me.client.omemo_devices(me.account, &other.jid)? {
            if let Some(f) = d.fingerprint {
                println!(
                    "  {} sees {}'s device {} ({:?}), fingerprint {}",
                    me.name,
                    other.name,
                    d.device_id,
                    d.encryption,
                    group(&f)
                );
            }
        }
    }
    alice.client.shutdown().await;
    bob.client.shutdown().await;
    Ok(())
}
