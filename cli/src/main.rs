//! `linnet`: a headless Linnet client. Every command prints JSON (one object per line) on
//! stdout and exits with a stable code, so scripts and other programs can drive it.
//!
//! Exit codes: 0 ok, 1 internal, 2 usage or bad input, 3 authentication, 4 TLS/security,
//! 5 network, 6 not found, 7 refused by policy, 8 wrong database key.

mod args;
mod call;
mod demo;

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use linnet_client::{
    format_fingerprint, AccountId, ChatListSnapshot, Client, ClientError, ClientOptions,
    ConversationListener, ConversationSnapshot, DbKey, DeliveryState, MessageId, ServerOverride,
    TlsOptions, TrustDecision, TrustPolicy,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use args::Args;

const USAGE: &str = r#"usage: linnet [options] <command> [args]

commands:
  keygen                          print a new random database key (64 hex digits)
  register <jid>                  create the account on its server (in-band) and add it here
  add-account <jid>               add an existing account here (no network)
  accounts                        list accounts
  login                           log in once and report how the session was negotiated
  roster add <jid> [--name N]     add a contact and ask for presence subscription
  roster approve|deny <jid>       answer a subscription request
  roster list                     list contacts
  send <jid> <body> [--wait sent|delivered]
  send-file <jid> <path> [--wait sent|delivered]
                                  upload a file (XEP-0363) and send it; progress as JSON lines
  retry-upload <jid> <message-id> [--wait sent|delivered]
                                  start a failed or cancelled upload again (the same message)
  download <jid> <message-id> [--dir DIR]
                                  fetch a received file into DIR (default .), hash checked
  encryption <jid> [auto|omemo|plain]
                                  show or set a conversation's encryption (files need plain)
  devices [<jid>]                 OMEMO devices of a contact (default: our own account) as last
                                  seen, with fingerprints and trust (undecided, blind, verified,
                                  distrusted), their labels once signature-checked, and whether
                                  they are stale (not answering: nothing is encrypted for them)
  device-label [<label>|--none]   show or set this device's OMEMO 2 label (logs in to publish
                                  it; --none: no label)
  fingerprint                     this device's OMEMO id and fingerprint, and the xmpp: URI
                                  for our QR code (the form Conversations scans)
  verify <xmpp-uri>               verify a contact's devices by the URI of their QR code
                                  (xmpp:jid?omemo-sid-<id>=<fingerprint>;…); a key that
                                  contradicts a known one changes nothing and fails
  trust <jid> <device-id> verify|trust|distrust|revoke
                                  decide on one device by hand (revoke: back to what the
                                  trust policy gives a new device)
  trust-policy [blind_trust|manual]
                                  show or set how new devices are trusted (default
                                  blind_trust: until a device of the contact is verified)
  call <jid> [--tone HZ|--play F.wav] [--record F.wav] [--video F.ivf] [--seconds N]
                                  call (audio; video with --video, VP8 frames): rings every
                                  device of theirs, talks N seconds (default 10) once connected,
                                  hangs up; each state as a JSON line
  answer [--from JID] [--wait S] [--tone HZ|--play F.wav] [--record F.wav] [--seconds N]
                                  wait up to S seconds (default 60) for a call, take it, talk
  sync [--seconds N]              log in, fetch what is waiting, log out
  chats                           print the chat-list snapshot
  show <jid> [--limit N]          print one conversation's snapshot
  history <jid> [--limit N]       messages as JSON lines, oldest first
  watch [--seconds N]             stay online; snapshot updates out, JSON commands in (stdin):
                                  {"cmd":"send","to":J,"body":B}  {"cmd":"reply","message":N,"body":B}
                                  {"cmd":"correct","message":N,"body":B}  {"cmd":"retract","message":N}
                                  {"cmd":"react","message":N,"emojis":[E,…]}  {"cmd":"typing","peer":J,"typing":true}
                                  {"cmd":"mark_read","peer":J}  add_contact/approve/deny {"jid":J}
                                  {"cmd":"show","peer":J}  {"cmd":"quit"}
                                  {"cmd":"block","jid":J,"spam":false}  {"cmd":"unblock","jid":J}
                                  profile: {"cmd":"set_avatar","path":P} (PNG/JPEG/WebP/GIF)  {"cmd":"remove_avatar"}
                                  {"cmd":"set_nickname","nick":N} (null withdraws)  {"cmd":"avatar","id":I,"path":P}
                                  {"cmd":"profile","jid":J}  {"cmd":"set_profile","full_name":F,"note":T,
                                  "urls":[…],"emails":[…],"phones":[…]}  {"cmd":"contacts"}
                                  files: {"cmd":"send_file","to":J,"path":P}  {"cmd":"cancel","message":N}
                                  {"cmd":"download","message":N,"dir":D} (runs on; ends with a "download" event)
                                  {"cmd":"retry_upload","message":N} starts a failed or cancelled upload again
                                  groups: {"cmd":"create_group","name":N}  {"cmd":"join_group","room":R,"nick":N}
                                  accept_invitation/decline_invitation/leave_group/destroy_group {"room":R}
                                  {"cmd":"invite","room":R,"jid":J}  {"cmd":"subject","room":R,"subject":S}
                                  {"cmd":"nick","room":R,"nick":N}  {"cmd":"kick","room":R,"nick":N}
                                  {"cmd":"ban","room":R,"jid":J}  {"cmd":"affiliation","room":R,"jid":J,"affiliation":A}
                                  (send to a group with {"cmd":"send","to":R,…}; open it with {"cmd":"open","peer":R})
                                  {"cmd":"send_private","room":R,"nick":N,"body":B} to one occupant alone
                                  {"cmd":"open","peer":J} streams that conversation's snapshots;
                                  {"cmd":"load_older","peer":J} widens an open one (from the
                                  server's archive past what is stored here)
  change-password                 new password from --password-file/LINNET_PASSWORD
  delete-account                  delete the account on the server and here
  demo                            two fresh accounts chatting on a local server

options:
  --data-dir DIR       database directory (env LINNET_DATA_DIR; default ./linnet-data)
  --key-file FILE      file with the 32-byte database key in hex (env LINNET_DB_KEY holds the key itself)
  --account JID        which account (default: the only one)
  --password-file F    password (env LINNET_PASSWORD; else first line of stdin)
  --server HOST:PORT   connect here instead of DNS SRV   --direct-tls   TLS from the first byte
  --ca FILE            extra trusted CA (PEM; env LINNET_CA)   --only-ca   trust only that CA
  --relay              calls only through the server's TURN relay (hides our IP address)
"#;

fn exit_code(e: &ClientError) -> i32 {
    match e {
        ClientError::Internal(_) => 1,
        ClientError::BadInput(_) => 2,
        ClientError::Auth(_) => 3,
        ClientError::Tls(_) => 4,
        ClientError::Network(_) => 5,
        ClientError::NotFound(_) => 6,
        ClientError::Policy(_) => 7,
        ClientError::WrongKey => 8,
    }
}

fn error_kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Internal(_) => "internal",
        ClientError::BadInput(_) => "bad_input",
        ClientError::Auth(_) => "auth",
        ClientError::Tls(_) => "tls",
        ClientError::Network(_) => "network",
        ClientError::NotFound(_) => "not_found",
        ClientError::Policy(_) => "policy",
        ClientError::WrongKey => "wrong_key",
    }
}

fn print(v: &Value) {
    println!("{v}");
}

fn bad(msg: impl Into<String>) -> ClientError {
    ClientError::BadInput(msg.into())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LINNET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if args.flag("help") || args.command.is_empty() {
        print!("{USAGE}");
        return;
    }
    let code = match run(&args).await {
        Ok(()) => 0,
        Err(e) => {
            print(&json!({"ok": false, "error": error_kind(&e), "message": e.to_string()}));
            exit_code(&e)
        }
    };
    std::process::exit(code);
}

fn options(args: &Args) -> Result<ClientOptions, ClientError> {
    let mut opts = ClientOptions::default();
    let ca = args
        .opt("ca")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LINNET_CA").map(PathBuf::from));
    // "Relay calls": media only through the server's TURN, never revealing our address.
    opts.relay_calls = args.flag("relay");
    if let Some(ca) = ca {
        let pem = std::fs::read(&ca).map_err(|e| bad(format!("--ca {}: {e}", ca.display())))?;
        opts.tls = TlsOptions {
            extra_ca_pem: Some(pem),
            only_extra_ca: args.flag("only-ca"),
        };
    }
    Ok(opts)
}

fn db_key(args: &Args) -> Result<DbKey, ClientError> {
    if let Some(path) = args.opt("key-file") {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| bad(format!("--key-file: {e}")))?,
        );
        return DbKey::from_hex(text.trim())
            .map_err(|_| bad("--key-file does not hold 64 hex digits"));
    }
    if let Ok(hex) = std::env::var("LINNET_DB_KEY") {
        let hex = zeroize::Zeroizing::new(hex);
        return DbKey::from_hex(hex.trim()).map_err(|_| bad("LINNET_DB_KEY is not 64 hex digits"));
    }
    Err(bad(
        "no database key: pass --key-file or set LINNET_DB_KEY (make one with `linnet keygen`)",
    ))
}

fn open(args: &Args) -> Result<Client, ClientError> {
    let dir = args
        .opt("data-dir")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LINNET_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("linnet-data"));
    Client::open(&dir, &db_key(args)?, options(args)?)
}

fn password(args: &Args) -> Result<zeroize::Zeroizing<String>, ClientError> {
    if let Some(path) = args.opt("password-file") {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("--password-file: {e}")))?;
        return Ok(zeroize::Zeroizing::new(
            text.lines().next().unwrap_or_default().to_owned(),
        ));
    }
    if let Ok(pw) = std::env::var("LINNET_PASSWORD") {
        return Ok(zeroize::Zeroizing::new(pw));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| bad(format!("reading password: {e}")))?;
    Ok(zeroize::Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

fn server(args: &Args) -> Result<Option<ServerOverride>, ClientError> {
    let Some(s) = args.opt("server") else {
        return Ok(None);
    };
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| bad("--server wants HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| bad("--server port is not a number"))?;
    Ok(Some(ServerOverride {
        host: host.to_owned(),
        port,
        direct_tls: args.flag("direct-tls"),
    }))
}

fn account(client: &Client, args: &Args) -> Result<AccountId, ClientError> {
    if let Some(jid) = args.opt("account") {
        return client
            .account_by_jid(jid)?
            .ok_or_else(|| ClientError::NotFound("account".into()));
    }
    let accounts = client.accounts()?;
    match accounts.as_slice() {
        [(id, _)] => Ok(*id),
        [] => Err(ClientError::NotFound(
            "no account; use register or add-account".into(),
        )),
        _ => Err(bad("several accounts: choose one with --account")),
    }
}

fn pos<'a>(args: &'a Args, i: usize, what: &str) -> Result<&'a str, ClientError> {
    args.positional
        .get(i)
        .map(String::as_str)
        .ok_or_else(|| bad(format!("missing {what}")))
}

async fn run(args: &Args) -> Result<(), ClientError> {
    match args.command.as_str() {
        "keygen" => {
            let key = DbKey::generate()?;
            println!("{}", key.to_hex().as_str());
            Ok(())
        }
        "demo" => demo::run(args).await,
        "register" => {
            let jid = pos(args, 0, "JID")?;
            let client = open(args)?;
            let pw = password(args)?;
            let id = client.register_account(jid, &pw, server(args)?).await?;
            print(&json!({"ok": true, "account": id.0}));
            Ok(())
        }
        "add-account" => {
            let jid = pos(args, 0, "JID")?;
            let client = open(args)?;
            let pw = password(args)?;
            let id = client.add_account(jid, &pw, server(args)?)?;
            print(&json!({"ok": true, "account": id.0}));
            Ok(())
        }
        "accounts" => {
            let client = open(args)?;
            for (id, jid) in client.accounts()? {
                print(&json!({"account": id.0, "jid": jid}));
            }
            Ok(())
        }
        "login" => {
            let client = open(args)?;
            let acc = account(&client, args)?;
            login_once(&client, acc).await?;
            let n = client.negotiated(acc);
            print(&json!({
                "ok": true,
                "mechanism": n.as_ref().map(|n| n.mechanism),
                "channel_binding": n.as_ref().and_then(|n| n.channel_binding),
                "direct_tls": n.as_ref().map(|n| n.direct_tls),
                "stream_management": n.as_ref().map(|n| n.sm_id.is_some()),
            }));
            client.shutdown().await;
            Ok(())
        }
        "roster" => roster(args).await,
        "call" => call::call(args).await,
        "answer" => call::answer(args).await,
        "send" => {
            let to = pos(args, 0, "recipient JID")?;
            let body = pos(args, 1, "message body")?;
            let wait = match args.opt("wait").unwrap_or("sent") {
                "sent" => DeliveryState::Sent,
                "delivered" => DeliveryState::Delivered,
                "none" => DeliveryState::Pending,
                other => return Err(bad(format!("--wait {other}: sent, delivered or none"))),
            };
            let client = open(args)?;
            let acc = account(&client, args)?;
            let id = client.send_message(acc, to, body)?;
            if wait > DeliveryState::Pending {
                login_once(&client, acc).await?;
                let conv = client.open_conversation(acc, to)?;
                let reached = wait_state(&client, conv, id, wait, Duration::from_secs(30)).await?;
                print(&json!({"ok": true, "message": id.0, "state": reached}));
            } else {
                print(&json!({"ok": true, "message": id.0, "state": DeliveryState::Pending}));
            }
            client.shutdown().await;
            Ok(())
        }
        "sync" => {
            let client = open(args)?;
            let acc = account(&client, args)?;
            login_once(&client, acc).await?;
            let secs: f64 = args
                .opt("seconds")
                .unwrap_or("1")
                .parse()
                .map_err(|_| bad("--seconds"))?;
            client.sync(acc).await?;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            client.shutdown().await;
            print(&json!({"ok": true}));
            Ok(())
        }
        "chats" => {
            let client = open(args)?;
            print(
                &serde_json::to_value(&*client.chat_list())
                    .map_err(|e| ClientError::Internal(e.to_string()))?,
            );
            Ok(())
        }
        "send-file" | "download" | "retry-upload" => files_command(args).await,
        "encryption" => {
            let peer = pos(args, 0, "peer JID")?;
            let client = open(args)?;
            let acc = account(&client, args)?;
            let conv = client.open_conversation(acc, peer)?;
            if let Some(p) = args.positional.get(1) {
                let policy = serde_json::from_value(json!(p))
                    .map_err(|_| bad("encryption: auto, omemo or plain"))?;
                client.set_encryption_policy(conv, policy)?;
            }
            print(&json!({"ok": true, "encryption": client.encryption_policy(conv)?}));
            Ok(())
        }
        "devices" | "fingerprint" | "verify" | "trust" | "trust-policy" => trust_command(args),
        "device-label" => {
            let client = open(args)?;
            let acc = account(&client, args)?;
            let label = if args.flag("none") {
                Some(None)
            } else {
                args.positional.first().map(|l| Some(l.as_str()))
            };
            if let Some(label) = label {
                login_once(&client, acc).await?;
                let set = client.set_omemo_device_label(acc, label).await;
                client.shutdown().await;
                set?;
            }
            print(&json!({"ok": true, "label": client.omemo_device_label(acc)?}));
            Ok(())
        }
        "show" => {
            let peer = pos(args, 0, "peer JID")?;
            let client = open(args)?;
            let acc = account(&client, args)?;
            let snap = conversation_snapshot(&client, acc, peer).await?;
            print(&serde_json::to_value(&*snap).map_err(|e| ClientError::Internal(e.to_string()))?);
            Ok(())
        }
        "history" => {
            let peer = pos(args, 0, "peer JID")?;
            let limit: u32 = args
                .opt("limit")
                .unwrap_or("100")
                .parse()
                .map_err(|_| bad("--limit"))?;
            let client = open(args)?;
            let acc = account(&client, args)?;
            let conv = client.open_conversation(acc, peer)?;
            for m in client.messages(conv, None, limit)? {
                print(&serde_json::to_value(&m).map_err(|e| ClientError::Internal(e.to_string()))?);
            }
            Ok(())
        }
        "watch" => watch(args).await,
        "change-password" => {
            let client = open(args)?;
            let acc = account(&client, args)?;
            let pw = password(args)?;
            login_once(&client, acc).await?;
            client.change_password(acc, &pw).await?;
            client.shutdown().await;
            print(&json!({"ok": true}));
            Ok(())
        }
        "delete-account" => {
            let client = open(args)?;
            let acc = account(&client, args)?;
            login_once(&client, acc).await?;
            client.delete_account(acc).await?;
            print(&json!({"ok": true}));
            Ok(())
        }
        other => Err(bad(format!("unknown command {other:?}"))),
    }
}

/// OMEMO trust: store only, no login (device lists and keys are as the last session saw
/// them).
fn trust_command(args: &Args) -> Result<(), ClientError> {
    let client = open(args)?;
    let acc = account(&client, args)?;
    match args.command.as_str() {
        "devices" => {
            let jid = match args.positional.first() {
                Some(j) => j.clone(),
                None => own_jid(&client, acc)?,
            };
            for d in client.omemo_devices(acc, &jid)? {
                print(&json!({
                    "device": d.device_id,
                    "encryption": d.encryption,
                    "active": d.active,
                    "fingerprint": d.fingerprint.as_deref().map(format_fingerprint),
                    "trust": d.trust,
                    "current": d.current,
                    "label": d.label,
                    "stale": d.stale,
                }));
            }
        }
        "fingerprint" => {
            let fingerprint = client.own_omemo_fingerprint(acc)?;
            print(&json!({
                "device": client.own_omemo_device(acc)?,
                "fingerprint": format_fingerprint(&fingerprint),
                "uri": client.own_verification_uri(acc)?,
            }));
        }
        "verify" => {
            let uri = pos(args, 0, "xmpp: URI")?;
            let result = client.verify_by_uri(acc, uri)?;
            let result =
                serde_json::to_value(&result).map_err(|e| ClientError::Internal(e.to_string()))?;
            print(&json!({"ok": true, "result": result}));
        }
        "trust" => {
            let jid = pos(args, 0, "JID")?;
            let device = pos(args, 1, "device id")?
                .parse::<u32>()
                .map_err(|_| bad("the device id is a number"))?;
            let decision: TrustDecision = serde_json::from_value(json!(pos(args, 2, "decision")?))
                .map_err(|_| bad("trust: verify, trust, distrust or revoke"))?;
            client.set_device_trust(acc, jid, device, decision)?;
            print(&json!({"ok": true}));
        }
        _ => {
            if let Some(p) = args.positional.first() {
                let policy: TrustPolicy = serde_json::from_value(json!(p))
                    .map_err(|_| bad("trust-policy: blind_trust or manual"))?;
                client.set_omemo_trust_policy(acc, policy)?;
            }
            print(&json!({"ok": true, "policy": client.omemo_trust_policy(acc)?}));
        }
    }
    Ok(())
}

fn own_jid(client: &Client, acc: AccountId) -> Result<String, ClientError> {
    client
        .accounts()?
        .into_iter()
        .find(|(id, _)| *id == acc)
        .map(|(_, jid)| jid)
        .ok_or_else(|| ClientError::NotFound("account".into()))
}

/// One login attempt; a network failure is reported instead of retried (the CLI is
/// short-lived, unlike an app).
async fn login_once(client: &Client, acc: AccountId) -> Result<(), ClientError> {
    match client.login(acc).await {
        Ok(()) => Ok(()),
        Err(e) => {
            client.shutdown().await;
            Err(e)
        }
    }
}

async fn roster(args: &Args) -> Result<(), ClientError> {
    let sub = pos(args, 0, "roster subcommand")?;
    let client = open(args)?;
    let acc = account(&client, args)?;
    if sub == "list" {
        for c in client.contacts(acc)? {
            print(&serde_json::to_value(&c).map_err(|e| ClientError::Internal(e.to_string()))?);
        }
        return Ok(());
    }
    let jid = pos(args, 1, "contact JID")?;
    login_once(&client, acc).await?;
    let result = match sub {
        "add" => client.add_contact(acc, jid, args.opt("name")).await,
        "approve" => client.approve_contact(acc, jid).await,
        "deny" => client.deny_contact(acc, jid).await,
        "remove" => client.remove_contact(acc, jid).await,
        other => Err(bad(format!(
            "roster {other}: add, approve, deny, remove or list"
        ))),
    };
    if result.is_ok() {
        // Give the server a round trip so that what we sent is processed before we go.
        let _ = client.sync(acc).await;
    }
    client.shutdown().await;
    result?;
    print(&json!({"ok": true}));
    Ok(())
}

struct ConvTx(mpsc::UnboundedSender<Arc<ConversationSnapshot>>);

impl ConversationListener for ConvTx {
    fn on_update(&self, s: Arc<ConversationSnapshot>) {
        let _ = self.0.send(s);
    }
}

async fn conversation_snapshot(
    client: &Client,
    acc: AccountId,
    peer: &str,
) -> Result<Arc<ConversationSnapshot>, ClientError> {
    let conv = client.open_conversation(acc, peer)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = client.subscribe_conversation(conv, ConvTx(tx))?;
    rx.recv()
        .await
        .ok_or_else(|| ClientError::Internal("no snapshot".into()))
}

async fn wait_state(
    client: &Client,
    conv: linnet_client::ConversationId,
    id: linnet_client::MessageId,
    want: DeliveryState,
    limit: Duration,
) -> Result<DeliveryState, ClientError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = client.subscribe_conversation(conv, ConvTx(tx))?;
    let fut = async {
        while let Some(s) = rx.recv().await {
            if let Some(m) = s.messages.iter().find(|m| m.id == id) {
                if m.state >= want && m.state != DeliveryState::Failed {
                    return Ok(m.state);
                }
                if m.state == DeliveryState::Failed {
                    return Err(ClientError::Policy("the message bounced".into()));
                }
            }
        }
        Err(ClientError::Internal("snapshot stream ended".into()))
    };
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| ClientError::Network(format!("message not {want:?} in time")))?
}

async fn watch(args: &Args) -> Result<(), ClientError> {
    let client = open(args)?;
    let seconds: Option<f64> = match args.opt("seconds") {
        Some(s) => Some(s.parse().map_err(|_| bad("--seconds"))?),
        None => None,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<ChatListSnapshot>>();
    let _sub = client.subscribe_chat_list(move |s: Arc<ChatListSnapshot>| {
        let _ = tx.send(s);
    });
    for (id, _) in client.accounts()? {
        if let Err(e) = client.login(id).await {
            print(
                &json!({"event": "login_failed", "account": id.0, "error": error_kind(&e), "message": e.to_string()}),
            );
        }
    }
    // Commands arrive as JSON lines on stdin; a blocking reader thread feeds them in.
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if !l.trim().is_empty() => {
                    if cmd_tx.send(l).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    // Conversations opened with {"cmd":"open"}: their snapshots stream out until the end.
    let (conv_tx, mut conv_rx) = mpsc::unbounded_channel::<Arc<ConversationSnapshot>>();
    let mut open_convs = std::collections::HashMap::new();
    let deadline = seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(s) = rx.recv() => {
                print(&json!({"event": "chat_list", "snapshot": &*s}));
            }
            Some(s) = conv_rx.recv() => {
                print(&json!({"event": "conversation", "snapshot": &*s}));
            }
            Some(line) = cmd_rx.recv() => {
                let reply = match conversation_command(&client, args, &line, &conv_tx, &mut open_convs) {
                    Some(r) => r,
                    None => command(&client, args, &line).await,
                };
                let quit = matches!(reply, Ok(ref v) if v.get("quit").is_some());
                match reply {
                    Ok(v) => print(&json!({"event": "result", "ok": true, "result": v})),
                    Err(e) => print(&json!({"event": "result", "ok": false, "error": error_kind(&e), "message": e.to_string()})),
                }
                if quit { break; }
            }
            _ = sleep => break,
        }
    }
    client.shutdown().await;
    Ok(())
}

/// `open` and `load_older`, which keep a conversation subscribed; `None` for the others.
fn conversation_command(
    client: &Client,
    args: &Args,
    line: &str,
    tx: &mpsc::UnboundedSender<Arc<ConversationSnapshot>>,
    open: &mut std::collections::HashMap<
        linnet_client::ConversationId,
        linnet_client::Subscription,
    >,
) -> Option<Result<Value, ClientError>> {
    let v: Value = serde_json::from_str(line).ok()?;
    let cmd = v.get("cmd").and_then(Value::as_str)?;
    if cmd != "open" && cmd != "load_older" {
        return None;
    }
    let mut run = || {
        let peer = v
            .get("peer")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing \"peer\""))?;
        let acc = match v.get("account").and_then(Value::as_str) {
            Some(jid) => client
                .account_by_jid(jid)?
                .ok_or_else(|| ClientError::NotFound("account".into()))?,
            None => account(client, args)?,
        };
        let conv = client.open_conversation(acc, peer)?;
        if cmd == "open" {
            if let std::collections::hash_map::Entry::Vacant(e) = open.entry(conv) {
                e.insert(client.subscribe_conversation(conv, ConvTx(tx.clone()))?);
            }
        } else if open.contains_key(&conv) {
            client.load_older(conv)?;
        } else {
            return Err(bad("open the conversation first"));
        }
        Ok(json!({"conversation": conv.0}))
    };
    Some(run())
}

/// One JSON command of `watch` (see the usage text).
async fn command(client: &Client, args: &Args, line: &str) -> Result<Value, ClientError> {
    let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("missing \"{k}\"")))
    };
    let message = || {
        v.get("message")
            .and_then(Value::as_i64)
            .map(MessageId)
            .ok_or_else(|| bad("missing \"message\" (a message id)"))
    };
    let acc = match v.get("account").and_then(Value::as_str) {
        Some(jid) => client
            .account_by_jid(jid)?
            .ok_or_else(|| ClientError::NotFound("account".into()))?,
        None => account(client, args)?,
    };
    match s("cmd")? {
        "send" => Ok(json!({"message": client.send_message(acc, s("to")?, s("body")?)?.0})),
        "reply" => Ok(json!({"message": client.reply(acc, message()?, s("body")?)?.0})),
        "correct" => client
            .correct_message(acc, message()?, s("body")?)
            .map(|_| json!({})),
        "retract" => client.retract_message(acc, message()?).map(|_| json!({})),
        "react" => {
            let emojis: Vec<String> = v
                .get("emojis")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("missing \"emojis\" (a list)"))?
                .iter()
                .map(|e| e.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("\"emojis\" holds strings"))?;
            client.react(acc, message()?, &emojis).map(|_| json!({}))
        }
        "typing" => {
            let conv = client.open_conversation(acc, s("peer")?)?;
            let typing = v.get("typing").and_then(Value::as_bool).unwrap_or(true);
            client.set_typing(conv, typing).map(|_| json!({}))
        }
        "mark_read" => {
            let conv = client.open_conversation(acc, s("peer")?)?;
            client.mark_read(conv)?;
            Ok(json!({}))
        }
        "add_contact" => {
            client
                .add_contact(acc, s("jid")?, v.get("name").and_then(Value::as_str))
                .await?;
            Ok(json!({}))
        }
        "approve" => client
            .approve_contact(acc, s("jid")?)
            .await
            .map(|_| json!({})),
        "deny" => client.deny_contact(acc, s("jid")?).await.map(|_| json!({})),
        "show" => {
            let snap = conversation_snapshot(client, acc, s("peer")?).await?;
            serde_json::to_value(&*snap).map_err(|e| ClientError::Internal(e.to_string()))
        }
        "create_group" => {
            let c = client.create_group(acc, s("name")?).await?;
            Ok(json!({"conversation": c.0}))
        }
        "join_group" => {
            let opt = |k: &str| v.get(k).and_then(Value::as_str);
            let c = client
                .join_group(acc, s("room")?, opt("nick"), opt("password"))
                .await?;
            Ok(json!({"conversation": c.0}))
        }
        "accept_invitation" => {
            let c = client.accept_invitation(acc, s("room")?).await?;
            Ok(json!({"conversation": c.0}))
        }
        "decline_invitation" => client
            .decline_invitation(acc, s("room")?)
            .map(|_| json!({})),
        "send_private" => {
            let group = client.group_conversation(acc, s("room")?)?;
            let id = client.send_private_message(group, s("nick")?, s("body")?)?;
            Ok(json!({"message": id.0}))
        }
        "leave_group" | "invite" | "subject" | "nick" | "kick" | "ban" | "affiliation"
        | "destroy_group" => {
            let group = client.group_conversation(acc, s("room")?)?;
            let reason = v.get("reason").and_then(Value::as_str);
            match s("cmd")? {
                "leave_group" => client.leave_group(group).await?,
                "invite" => client.invite_to_group(group, s("jid")?, reason).await?,
                "subject" => client.set_group_subject(group, s("subject")?)?,
                "nick" => client.set_group_nick(group, s("nick")?)?,
                "kick" => client.kick_from_group(group, s("nick")?, reason).await?,
                "ban" => client.ban_from_group(group, s("jid")?, reason).await?,
                "affiliation" => {
                    client
                        .set_group_affiliation(group, s("jid")?, s("affiliation")?)
                        .await?
                }
                _ => client.destroy_group(group, reason).await?,
            }
            Ok(json!({"conversation": group.0}))
        }
        "send_file" => {
            let id = client
                .send_file(acc, s("to")?, std::path::Path::new(s("path")?))
                .await?;
            Ok(json!({"message": id.0}))
        }
        "cancel" => client.cancel_transfer(message()?).map(|_| json!({})),
        "retry_upload" => client.retry_upload(message()?).await.map(|_| json!({})),
        "download" => {
            // Runs on while other commands come in; its progress shows in the snapshots.
            let id = message()?;
            let dir = PathBuf::from(v.get("dir").and_then(Value::as_str).unwrap_or("."));
            let client = client.clone();
            tokio::spawn(async move {
                let done = match client.download_file(id, &dir).await {
                    Ok(path) => json!({"ok": true, "path": path}),
                    Err(e) => json!({"ok": false, "error": error_kind(&e), "text": e.to_string()}),
                };
                print(&json!({"event": "download", "message": id.0, "result": done}));
            });
            Ok(json!({"started": true}))
        }
        "block" => {
            let spam = v.get("spam").and_then(Value::as_bool).unwrap_or(false);
            let reported = client.block_contact(acc, s("jid")?, spam).await?;
            Ok(json!({"reported": reported}))
        }
        "unblock" => client
            .unblock_contact(acc, s("jid")?)
            .await
            .map(|_| json!({})),
        "set_avatar" => {
            let image = std::fs::read(s("path")?)
                .map_err(|e| bad(format!("cannot read the picture: {e}")))?;
            let media_type = v.get("type").and_then(Value::as_str).unwrap_or("image/png");
            client
                .set_avatar(acc, &image, media_type)
                .await
                .map(|_| json!({}))
        }
        "remove_avatar" => client.remove_avatar(acc).await.map(|_| json!({})),
        "set_nickname" => {
            let nick = v.get("nick").and_then(Value::as_str);
            client.set_nickname(acc, nick).await.map(|_| json!({}))
        }
        "avatar" => match client.avatar(acc, s("id")?)? {
            Some(a) => {
                std::fs::write(s("path")?, &a.data)
                    .map_err(|e| bad(format!("cannot write the picture: {e}")))?;
                Ok(json!({"media_type": a.media_type, "bytes": a.data.len()}))
            }
            None => Err(ClientError::NotFound("avatar".into())),
        },
        "profile" => {
            let card = client.profile_card(acc, s("jid")?).await?;
            Ok(json!({"profile": card}))
        }
        "set_profile" => {
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            let list = |k: &str| -> Vec<String> {
                v.get(k)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let card = linnet_client::ProfileCard {
                full_name: text("full_name"),
                note: text("note"),
                urls: list("urls"),
                emails: list("emails"),
                phones: list("phones"),
            };
            client.set_profile_card(acc, &card).await.map(|_| json!({}))
        }
        "contacts" => Ok(json!({"contacts": client.contacts(acc)?})),
        "quit" => Ok(json!({"quit": true})),
        other => Err(bad(format!("unknown cmd {other:?}"))),
    }
}

/// `send-file`, `retry-upload` and `download`: log in, move the file with its progress as
/// JSON lines (`{"event":"progress",…}`), then report.
async fn files_command(args: &Args) -> Result<(), ClientError> {
    let peer = pos(args, 0, "peer JID")?;
    let client = open(args)?;
    let acc = account(&client, args)?;
    login_once(&client, acc).await?;
    let result = move_file(&client, acc, peer, args).await;
    client.shutdown().await;
    print(&result?);
    Ok(())
}

async fn move_file(
    client: &Client,
    acc: AccountId,
    peer: &str,
    args: &Args,
) -> Result<Value, ClientError> {
    use linnet_client::TransferState as T;
    let message_arg = || -> Result<MessageId, ClientError> {
        Ok(MessageId(
            pos(args, 1, "message id")?
                .parse()
                .map_err(|_| bad("the message id is a number"))?,
        ))
    };
    let want = match args.opt("wait").unwrap_or("sent") {
        "sent" => DeliveryState::Sent,
        "delivered" => DeliveryState::Delivered,
        other => return Err(bad(format!("--wait {other}: sent or delivered"))),
    };
    // Started before subscribing: the first snapshot then shows the new attempt, not the
    // failure being retried.
    let retried = if args.command == "retry-upload" {
        let id = message_arg()?;
        client.retry_upload(id).await?;
        Some(id)
    } else {
        None
    };
    let conv = client.open_conversation(acc, peer)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = client.subscribe_conversation(conv, ConvTx(tx))?;
    // Prints each new progress figure of `id` until `done` says the snapshot is final.
    let mut last = None;
    let mut follow = move |s: &ConversationSnapshot, id: MessageId| {
        let m = s.messages.iter().find(|m| m.id == id)?;
        let a = m.attachment.as_ref()?;
        if last != Some((a.state, a.transferred)) {
            last = Some((a.state, a.transferred));
            let line = json!({"event": "progress", "message": id.0, "state": a.state,
                              "transferred": a.transferred, "size": a.size});
            print(&line);
        }
        Some((m.state, a.state, a.error.clone()))
    };
    if args.command == "download" {
        let id = message_arg()?;
        let dir = PathBuf::from(args.opt("dir").unwrap_or("."));
        let download = client.download_file(id, &dir);
        tokio::pin!(download);
        let path = loop {
            tokio::select! {
                r = &mut download => break r?,
                Some(s) = rx.recv() => { follow(&s, id); }
            }
        };
        return Ok(json!({"ok": true, "message": id.0, "path": path}));
    }
    let id = match retried {
        Some(id) => id,
        None => {
            let path = PathBuf::from(pos(args, 1, "file path")?);
            client.send_file(acc, peer, &path).await?
        }
    };
    while let Some(s) = rx.recv().await {
        match follow(&s, id) {
            Some((_, T::Failed | T::Cancelled, error)) => {
                return Err(ClientError::Policy(
                    error.unwrap_or_else(|| "the upload failed".into()),
                ))
            }
            Some((DeliveryState::Failed, _, _)) => {
                return Err(ClientError::Policy("the message bounced".into()))
            }
            Some((state, T::Uploaded, _)) if state >= want => {
                return Ok(json!({"ok": true, "message": id.0, "state": state}))
            }
            _ => {}
        }
    }
    Err(ClientError::Internal("snapshot stream ended".into()))
}
