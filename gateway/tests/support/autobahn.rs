//! Autobahn|Testsuite's fuzzingclient as a test helper: run `wstest -m fuzzingclient` against a
//! URL, read `index.json`, and assert zero failed cases (keeping the reports of a failing run).
//! [`run_fuzzingclient`] excludes the compression cases (12.*, 13.*) for servers that do not
//! negotiate permessage-deflate; [`run_fuzzingclient_all`] runs them too, and
//! [`Report::assert_all_implemented`] then refuses `UNIMPLEMENTED` as well.
//!
//! Needs `wstest` from `scripts/setup.sh` (`.venv-autobahn/`), or `SWITCHBOARD_WSTEST`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::repo_root;

/// Outcomes that are not failures: `NON-STRICT` and `INFORMATIONAL` are Autobahn's own
/// "acceptable" grades, `UNIMPLEMENTED` is for optional features (compression).
pub const ACCEPTABLE: &[&str] = &["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"];
/// With 12.* and 13.* excluded Autobahn 0.8.2 has 301 cases; fewer means cases went missing.
pub const MIN_CASES: usize = 200;
/// With 12.* and 13.* Autobahn 0.8.2 has 517 cases (216 compression cases).
pub const MIN_CASES_ALL: usize = 517;
/// Without compression the run takes a minute or two on 2 cores; this only stops a hung run.
pub const RUN_LIMIT: Duration = Duration::from_secs(20 * 60);
/// With the compression cases (the Python client compresses up to 128 MiB per case) the run
/// takes 20-30 minutes on 2 shared cores.
pub const RUN_LIMIT_ALL: Duration = Duration::from_secs(50 * 60);

pub const AGENT: &str = "switchboard";

/// One case's grades from `index.json`.
#[derive(Debug)]
pub struct CaseResult {
    pub behavior: String,
    pub behavior_close: String,
    pub remote_close_code: String,
    /// The case's JSON report, relative to the report directory.
    pub report_file: String,
}

#[derive(Debug)]
pub struct Report {
    pub cases: BTreeMap<String, CaseResult>,
    /// Where the HTML/JSON reports are; kept on disk when the report fails.
    dir: tempfile::TempDir,
}

impl Report {
    /// Print the counts and panic on any failed case (or too few cases).
    pub fn assert_conformant(&self, what: &str) {
        let mut by_behavior = BTreeMap::<&str, usize>::new();
        let mut by_close = BTreeMap::<&str, usize>::new();
        for r in self.cases.values() {
            *by_behavior.entry(r.behavior.as_str()).or_default() += 1;
            *by_close.entry(r.behavior_close.as_str()).or_default() += 1;
        }
        println!(
            "autobahn ({what}): {} cases; behavior {by_behavior:?}; behaviorClose {by_close:?}",
            self.cases.len()
        );

        let failed: Vec<String> = self
            .cases
            .iter()
            .filter(|(_, r)| {
                !ACCEPTABLE.contains(&r.behavior.as_str())
                    || !ACCEPTABLE.contains(&r.behavior_close.as_str())
            })
            .map(|(id, r)| format!("{id} ({}/{})", r.behavior, r.behavior_close))
            .collect();
        if !failed.is_empty() || self.cases.len() <= MIN_CASES {
            let details = self.failure_details(5);
            let kept = self.keep();
            assert!(
                failed.is_empty(),
                "autobahn ({what}): {} failed case(s) (behavior/behaviorClose): {}\n\
                 first failures:\n{details}\nfull reports kept in {}",
                failed.len(),
                failed.join(", "),
                kept.display()
            );
            panic!(
                "autobahn ({what}): only {} cases ran, expected more than {MIN_CASES}; \
                 reports kept in {}",
                self.cases.len(),
                kept.display()
            );
        }
    }

    /// [`Report::assert_conformant`], and no case `UNIMPLEMENTED` (compression negotiated in
    /// every 12.* and 13.* case), and all of Autobahn's cases ran.
    pub fn assert_all_implemented(&self, what: &str) {
        self.assert_conformant(what);
        let unimplemented: Vec<&str> = self
            .cases
            .iter()
            .filter(|(_, r)| r.behavior == "UNIMPLEMENTED" || r.behavior_close == "UNIMPLEMENTED")
            .map(|(id, _)| id.as_str())
            .collect();
        let compression = self
            .cases
            .keys()
            .filter(|id| id.starts_with("12.") || id.starts_with("13."))
            .count();
        println!("autobahn ({what}): {compression} compression cases (12.*, 13.*)");
        if !unimplemented.is_empty() || self.cases.len() < MIN_CASES_ALL {
            let kept = self.keep();
            panic!(
                "autobahn ({what}): {} case(s) UNIMPLEMENTED: {}; {} cases ran (expected at \
                 least {MIN_CASES_ALL}); reports kept in {}",
                unimplemented.len(),
                unimplemented.join(", "),
                self.cases.len(),
                kept.display()
            );
        }
    }

    /// `result` and `resultClose` of the first `n` failed cases, from their report files.
    fn failure_details(&self, n: usize) -> String {
        self.cases
            .iter()
            .filter(|(_, r)| {
                !ACCEPTABLE.contains(&r.behavior.as_str())
                    || !ACCEPTABLE.contains(&r.behavior_close.as_str())
            })
            .take(n)
            .map(|(id, r)| {
                let path = self.dir.path().join("reports").join(&r.report_file);
                let case: serde_json::Value = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
                format!(
                    "  {id}: {} | close: {} (remote close code {})",
                    case["result"].as_str().unwrap_or("?"),
                    case["resultClose"].as_str().unwrap_or("?"),
                    r.remote_close_code,
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Keep the report directory past the test (for a failing run) and return its path.
    fn keep(&self) -> PathBuf {
        let kept = std::env::temp_dir().join(format!(
            "switchboard-autobahn-{}-{}",
            std::process::id(),
            self.cases.len()
        ));
        let _ = std::fs::remove_dir_all(&kept);
        match copy_dir(self.dir.path(), &kept) {
            Ok(()) => kept,
            Err(_) => self.dir.path().to_path_buf(),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

pub fn wstest_path() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_WSTEST") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".venv-autobahn/bin/wstest"),
    }
}

/// Run `wstest -m fuzzingclient` against `url` without the compression cases.
pub async fn run_fuzzingclient(url: &str) -> Report {
    run_cases(url, &["12.*", "13.*"], RUN_LIMIT).await
}

/// Run every Autobahn case against `url`, the compression cases (12.*, 13.*) included.
pub async fn run_fuzzingclient_all(url: &str) -> Report {
    run_cases(url, &[], RUN_LIMIT_ALL).await
}

/// Run `wstest -m fuzzingclient` against `url` and read its `index.json`.
async fn run_cases(url: &str, exclude: &[&str], limit: Duration) -> Report {
    let wstest = wstest_path();
    assert!(
        wstest.is_file(),
        "{} not found: run scripts/setup.sh (it creates .venv-autobahn/), \
         or set SWITCHBOARD_WSTEST to a wstest binary",
        wstest.display()
    );

    let dir = tempfile::tempdir().expect("tempdir for the Autobahn run");
    let outdir = dir.path().join("reports");
    let spec = serde_json::json!({
        "outdir": outdir,
        "servers": [{"agent": AGENT, "url": url}],
        "cases": ["*"],
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    });
    let spec_path = dir.path().join("fuzzingclient.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write the fuzzingclient spec");
    let log_path = dir.path().join("wstest.log");
    let log = std::fs::File::create(&log_path).expect("create wstest log");
    let log_err = log.try_clone().expect("clone wstest log handle");

    let mut child = tokio::process::Command::new(&wstest)
        .args(["-m", "fuzzingclient", "-s"])
        .arg(&spec_path)
        .current_dir(dir.path())
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", wstest.display()));
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "wstest still running after {limit:?}; log tail:\n{}",
                tail(&log_path, 30)
            )
        })
        .expect("wait for wstest");
    assert!(
        status.success(),
        "wstest exited with {status}; log tail:\n{}",
        tail(&log_path, 30)
    );

    let index_path = outdir.join("index.json");
    let index = std::fs::read_to_string(&index_path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e}; wstest log tail:\n{}",
            index_path.display(),
            tail(&log_path, 30)
        )
    });
    parse_index(&index, dir)
}

fn parse_index(text: &str, dir: tempfile::TempDir) -> Report {
    let index: serde_json::Value = serde_json::from_str(text).expect("index.json is JSON");
    let cases = index
        .get(AGENT)
        .and_then(|v| v.as_object())
        .unwrap_or_else(|| panic!("index.json has no results for agent {AGENT}: {text:.500}"));
    let cases = cases
        .iter()
        .map(|(id, r)| {
            let grade = |key: &str| r[key].as_str().unwrap_or("MISSING").to_owned();
            (
                id.clone(),
                CaseResult {
                    behavior: grade("behavior"),
                    behavior_close: grade("behaviorClose"),
                    remote_close_code: r["remoteCloseCode"].to_string(),
                    report_file: r["reportfile"].as_str().unwrap_or_default().to_owned(),
                },
            )
        })
        .collect();
    Report { cases, dir }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
