//! The binary room protocol from another language: a Node client (`e2e/proto/client.js`) built
//! with `protobufjs` from the committed `gateway/proto/switchboard/v1/rooms.proto` talks to the
//! real gateway. It exercises every message kind in both directions (join, leave, publish with
//! `json` and `binary` payloads, ephemeral, presence, ping; joined, left, ack, error, message,
//! presence change and snapshot, pong, shutdown), so a field the Rust types and the `.proto`
//! disagree on fails here. A JSON member (the reference client) in the same room sees the same
//! messages with the same seqs.
//!
//! Needs `e2e/proto/node_modules` (installed by `scripts/setup.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::room_client::{Options, RoomClient};
use support::{ConfigBuilder, route};
use support::{Gateway, PROMPTLY, repo_root};
use tokio::io::{AsyncBufReadExt, BufReader};

fn config() -> String {
    ConfigBuilder::new()
        .drain("0s", "15s")
        .route(
            route("node", "/node")
                .rooms(json!({
                    "join": ["chat:*"],
                    "publish": ["chat:*"],
                    "presence": true,
                    "history": {"maxMessages": 100, "maxAge": "10m"},
                }))
                .drain(json!({"window": "1s", "closeCode": 4100, "closeReason": "pod restarting"})),
        )
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobufjs_client_built_from_the_committed_proto_speaks_every_message_kind() {
    let dir = repo_root().join("e2e/proto");
    assert!(
        dir.join("node_modules/protobufjs/package.json").is_file(),
        "needs {}/node_modules: run scripts/setup.sh",
        dir.display()
    );
    let gw = Gateway::start(&config()).await;
    let mut json_member = RoomClient::connected(Options::new(gw.ws_url("/node"))).await;
    json_member.join_and_wait("chat:node").await;

    let mut node = tokio::process::Command::new("node")
        .arg(dir.join("client.js"))
        .arg(gw.ws_url("/node"))
        .arg(repo_root().join("gateway/proto/switchboard/v1/rooms.proto"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run node client.js");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the Node client said nothing for 60s")
            .expect("read the Node client's output")
            .expect("the Node client ended early (its error is above)")
    };
    assert_eq!(next_line().await, r#"{"event":"ready"}"#);

    // The JSON member saw what the Node client published.
    let got = json_member.messages("chat:node", 3, PROMPTLY).await;
    gw.terminate();
    let s: Value = serde_json::from_str(&next_line().await).expect("the summary");
    eprintln!("node summary: {s}");

    let joined = &s["joined"];
    assert_eq!(joined[0]["kind"], "joined");
    assert_eq!(joined[0]["joined"]["room"], "chat:node");
    assert_eq!(joined[1]["id"], "jb");
    let epoch = got[0].epoch.clone();
    assert_eq!(
        s["ack1"]["ack"]["position"],
        json!({"seq": got[0].seq, "epoch": epoch})
    );
    assert_eq!(s["ack2"]["ack"]["position"]["seq"], got[1].seq);
    // (protobufjs names the synthetic oneof of a proto3 `optional` field: `_id`.)
    assert_eq!(
        (&s["ack3"]["id"], &s["ack3"]["ack"]),
        (&json!("p3"), &json!({})),
        "an ephemeral publish is acked without a position"
    );
    assert_eq!(
        (&s["pong"]["id"], &s["pong"]["kind"]),
        (&json!("ping"), &json!("pong"))
    );
    for (key, code) in [
        ("noPayload", "bad_request"),
        ("notJoined", "not_joined"),
        ("forbidden", "forbidden"),
    ] {
        assert_eq!(s[key]["error"]["code"], code, "{key}: {}", s[key]);
        assert!(
            s[key]["error"]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
        );
    }
    let members = s["snapshot"]["presence"]["members"]
        .as_array()
        .expect("a snapshot");
    assert_eq!(members.len(), 3, "two Node clients and the JSON member");

    // Both encodings, one room: the same messages, seqs and payloads.
    let received = s["received"].as_array().unwrap();
    assert_eq!(received.len(), 3);
    assert_eq!(received[0]["json"], json!({"hi": "node"}));
    assert_eq!(
        (received[0]["seq"].as_u64(), got[0].seq),
        (Some(got[0].seq), 1)
    );
    assert_eq!(got[0].data, Some(json!({"hi": "node"})));
    assert_eq!(received[1]["binaryHex"], "000102fdfeff");
    assert_eq!(received[1]["seq"], got[1].seq);
    assert_eq!(got[1].b64.as_deref(), Some("AAEC/f7/"));
    assert_eq!(
        (
            &received[2]["ephemeral"],
            &received[2]["json"],
            &received[2]["seq"]
        ),
        (&json!(true), &json!("typing"), &json!(0))
    );
    assert!(got[2].ephemeral && got[2].seq == 0);
    assert!(
        received
            .iter()
            .all(|m| m["epoch"] == epoch && m["from"].is_null())
    );

    assert_eq!(s["left"]["left"]["room"], "chat:node");
    assert_eq!(s["presenceLeave"]["presence"]["event"], "leave");
    assert_eq!(s["textFrame"]["error"]["code"], "bad_request");
    for d in s["drain"].as_array().unwrap() {
        let ms = d["shutdown"]["shutdown"]["reconnectAfterMs"]
            .as_u64()
            .unwrap();
        assert!((500..5000).contains(&ms), "{d}");
        assert_eq!(
            d["close"],
            json!({"code": 4100, "reason": "pod restarting"})
        );
        assert_eq!(d["textFrames"], 0, "nothing but binary frames: {d}");
    }
    let status = node.wait().await.expect("node exits");
    assert!(status.success());
}
