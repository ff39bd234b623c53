//! `switchboard-operator --version` names the version and the git commit it was built from.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// The commit `build/build_info.rs` captures: `$SWITCHBOARD_GIT_COMMIT` when set at build
/// time, else `git rev-parse --short=12 HEAD`, else `unknown`.
fn expected_commit() -> String {
    if let Ok(c) = std::env::var("SWITCHBOARD_GIT_COMMIT")
        && !c.trim().is_empty()
    {
        return c.trim().to_owned();
    }
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[test]
fn version_flag_prints_the_version_and_the_commit_it_was_built_from() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-operator"))
        .arg("--version")
        .output()
        .expect("run switchboard-operator --version");
    assert!(out.status.success(), "--version exited with {}", out.status);
    let want = format!(
        "switchboard-operator {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        expected_commit()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), want);
}
