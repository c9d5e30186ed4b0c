//! The app going to the background and back: client state indication (XEP-0352) against
//! both servers.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use linnet_client::ConnectionState;
use linnet_tests::*;

async fn background_and_back(server: Server) {
    let (a, b) = contacts_pair(server).await;
    let before = b.client.negotiated(b.account).unwrap();
    assert!(before.csi, "the server takes client state indications");

    b.client.set_foreground(false);
    // A message is urgent: it reaches a device in the background at once.
    a.client
        .send_message(a.account, &b.jid, "while away")
        .unwrap();
    b.wait_incoming(&a.jid, 1, "message in the background")
        .await;

    b.client.set_foreground(true);
    b.client.send_message(b.account, &a.jid, "back").unwrap();
    a.wait_incoming(&b.jid, 1, "reply from the foreground")
        .await;

    // Both indications were accepted: the stream the session started on is still the one
    // in use (a stream error would have ended it, and the server keeps no session to
    // resume after one).
    let after = b.client.negotiated(b.account).unwrap();
    assert_eq!(after.sm_id, before.sm_id);
    assert_eq!(
        b.client.chat_list().accounts[0].connection,
        ConnectionState::Online
    );
}

both_servers!(background_and_back);
