//! The build's identity: `--version` names the version and the git commit the binary was built
//! from, and the running gateway shows the same in `/status` and `switchboard_build_info`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::process::Command;

use support::{EchoServer, Gateway, gateway_bin, http_get, proxy_config, repo_root};

/// The commit `build.rs` captures: `$SWITCHBOARD_GIT_COMMIT` when set at build time, else
/// `git rev-parse --short=12 HEAD`, else `unknown`.
fn expected_commit() -> String {
    if let Ok(c) = std::env::var("SWITCHBOARD_GIT_COMMIT")
        && !c.trim().is_empty()
    {
        return c.trim().to_owned();
    }
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[test]
fn version_flag_prints_the_version_and_the_commit_it_was_built_from() {
    let out = Command::new(gateway_bin())
        .arg("--version")
        .output()
        .expect("run switchboard-gateway --version");
    assert!(out.status.success(), "--version exited with {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "switchboard-gateway {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        expected_commit()
    );
    assert_eq!(stdout.trim_end(), want);
}

#[tokio::test]
async fn status_and_metrics_name_the_running_build() {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&proxy_config(&[echo.port()])).await;
    let commit = expected_commit();

    let (code, body) = http_get(gateway.admin(), "/status").await;
    assert_eq!(code, 200, "/status: {body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("/status JSON");
    assert_eq!(
        status["version"],
        env!("CARGO_PKG_VERSION"),
        "/status: {body}"
    );
    assert_eq!(status["commit"], commit.as_str(), "/status: {body}");

    let (code, metrics) = http_get(gateway.admin(), "/metrics").await;
    assert_eq!(code, 200);
    let line = format!(
        "switchboard_build_info{{commit=\"{commit}\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "missing `{line}` in /metrics:\n{metrics}"
    );
}
