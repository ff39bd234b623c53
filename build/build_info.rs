//! The build script of both binaries (`build = "../build/build_info.rs"` in the gateway's and
//! the operator's Cargo.toml): captures the git commit the binary is built from as
//! `SWITCHBOARD_GIT_COMMIT` (shown by `--version`, in `/status` and in `switchboard_build_info`).
//! An explicit `SWITCHBOARD_GIT_COMMIT` in the build environment wins (the Containerfile passes
//! it, since its build context has no `.git`); otherwise `git rev-parse`; `unknown` outside a
//! git checkout.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SWITCHBOARD_GIT_COMMIT");
    let commit = match std::env::var("SWITCHBOARD_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => {
            // Rerun when HEAD moves: HEAD itself, the branch it points at, packed refs. Only
            // files that exist: while a named path is missing, cargo reruns the script on every
            // build, which recompiles the whole crate every time.
            let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
            watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
            for file in &watched {
                if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", file])
                    && std::path::Path::new(&p).exists()
                {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=SWITCHBOARD_GIT_COMMIT={commit}");
}
