//! Print the `RealtimeRoute` CustomResourceDefinition as YAML, or write it to a file.
//!
//! ```sh
//! cargo run -p switchboard-operator --bin crdgen > crds/realtimeroutes.yaml
//! cargo run -p switchboard-operator --bin crdgen -- crds/realtimeroutes.yaml
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match switchboard_operator::api::crd_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::env::args().nth(1) {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, yaml) {
                eprintln!("crdgen: writing {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
        None => print!("{yaml}"),
    }
    ExitCode::SUCCESS
}
