//! `switchboard-gateway`: parse arguments, set up logging (and trace export when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set), load and validate the config before binding anything,
//! then run. `--check` validates and exits (0 ok, 64 invalid).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard_gateway::boot;
use switchboard_gateway::kubernetes::{self, KubeSettings, ObjectRef};
use switchboard_gateway::telemetry;

/// jemalloc: returns the pages a connect burst freed (glibc kept them as RSS), with less
/// per-allocation overhead; its purge settings are in `.cargo/config.toml`.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Switchboard realtime gateway.
#[derive(Debug, Parser)]
#[command(version = switchboard_gateway::metrics::VERSION_LINE, about)]
struct Args {
    /// GatewayConfig YAML file. Unset: the embedded quickstart config. With `--kube-snapshot`:
    /// the bootstrap (listeners, admin, global settings; no routes), default `0.0.0.0:8080` and
    /// admin `0.0.0.0:9090`.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Take the config from the operator's snapshot Secret `NAMESPACE/NAME` (and backends from
    /// the EndpointSlices of the Services routes name) instead of a file. Credentials: the
    /// kubeconfig (`KUBECONFIG`) or the in-cluster service account.
    #[arg(long, env = "SWITCHBOARD_KUBE_SNAPSHOT", value_name = "NAMESPACE/NAME")]
    kube_snapshot: Option<ObjectRef>,
    /// Validate the config (and the keys and certificates it names), print `ok` or the
    /// problems, and exit 0 or 64 without binding anything.
    #[arg(long)]
    check: bool,
    /// How often the config file and the files it names are checked for changes.
    #[arg(long, env = "SWITCHBOARD_RELOAD_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    reload_interval: Duration,
    /// Worker threads of the edge runtime, shared by every listener's connections and the
    /// room bus's NATS client; as many tunnel threads again run proxied WebSockets over plain
    /// TCP once upgraded (`tunnel/threads.rs`).
    #[arg(long, env = "SWITCHBOARD_THREADS", default_value_t = 2)]
    threads: usize,
    /// Log format: `text` or `json`. Text is coloured only when stderr is a terminal.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

const EX_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = match telemetry::init(&args.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchboard-gateway: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    // One crypto provider for every rustls user in the process (TLS listener, JWKS client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The same ring verifies JWT signatures (~4x faster than the RustCrypto default).
    switchboard_gateway::auth::crypto::install();

    let loaded = match &args.kube_snapshot {
        Some(_) => boot::bootstrap(args.config.as_deref()),
        None => boot::load(args.config.as_deref(), args.check),
    };
    if args.check {
        return match loaded {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{e}");
                ExitCode::from(EX_CONFIG)
            }
        };
    }
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("switchboard-gateway: invalid config:\n{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let kube = match args.kube_snapshot {
        None => None,
        Some(snapshot) => match kubernetes::infer_client_config() {
            Ok(client) => Some(KubeSettings {
                snapshot,
                client,
                endpoint_sync_timeout: Duration::from_secs(5),
            }),
            Err(e) => {
                eprintln!("switchboard-gateway: --kube-snapshot: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        },
    };
    let opts = boot::RunOptions {
        // With the Kubernetes source the file is only the bootstrap: not watched.
        config_path: args.config.filter(|_| kube.is_none()),
        kube,
        reload_interval: args.reload_interval,
        threads: args.threads,
    };
    let ran = boot::run(cfg, opts);
    // After the drain: its spans (and the last handshakes) are sent before the process exits.
    telemetry.shutdown();
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-gateway: {e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}
