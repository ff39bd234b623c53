//! Log output of the real binary when stderr is not a terminal (a file, a pipe, a container's
//! log driver): no ANSI colour escapes in text lines, and `--log-format json` lines are JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, gateway_bin, proxy_config};

/// Run the gateway with stderr piped (and without `NO_COLOR`), until it logs that it started
/// and a little after; return what it wrote to stderr.
fn stderr_of_a_started_gateway(extra_args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, proxy_config(&[free_port()])).expect("write config");
    let mut child = Command::new(gateway_bin())
        .arg("--config")
        .arg(&config)
        .args(extra_args)
        .env_remove("NO_COLOR")
        .env_remove("SWITCHBOARD_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the gateway");
    let stderr = child.stderr.take().expect("piped stderr");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("switchboard gateway starting") {
                let _ = started_tx.send(());
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    });
    // The pipe stays open until the process exits: wait for its start line, then stop it.
    let _ = started_rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let out = reader.join().expect("reader thread");
    assert!(
        out.contains("switchboard gateway starting"),
        "the gateway logged its start:\n{out}"
    );
    out
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_escapes() {
    let out = stderr_of_a_started_gateway(&[]);
    assert!(
        !out.contains("\u{1b}["),
        "ANSI escapes in piped logs:\n{out:?}"
    );
}

#[test]
fn json_logs_are_one_json_object_per_line() {
    let out = stderr_of_a_started_gateway(&["--log-format", "json"]);
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = Command::new(gateway_bin())
        .args(["--check", "--log-format", "yaml"])
        .env_remove("SWITCHBOARD_LOG_FORMAT")
        .output()
        .expect("run the gateway");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("yaml"),
        "{out:?}"
    );
}
