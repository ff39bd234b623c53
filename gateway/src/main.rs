//! `switchboard-gateway`: parse arguments, set up logging, load and validate the config before
//! binding anything, then run. `--check` validates and exits (0 ok, 64 invalid).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard_gateway::boot;

/// Switchboard realtime gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// GatewayConfig YAML file. Unset: the embedded quickstart config.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the config (and the keys and certificates it names), print `ok` or the
    /// problems, and exit 0 or 64 without binding anything.
    #[arg(long)]
    check: bool,
    /// How often the config file and the files it names are checked for changes.
    #[arg(long, env = "SWITCHBOARD_RELOAD_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    reload_interval: Duration,
    /// Worker threads per listener.
    #[arg(long, env = "SWITCHBOARD_THREADS", default_value_t = 2)]
    threads: usize,
    /// Log format: `text` or `json`.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

const EX_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(&args.log_format);
    // One crypto provider for every rustls user in the process (TLS listener, JWKS client).
    let _ = rustls::crypto::ring::default_provider().install_default();

    let loaded = boot::load(args.config.as_deref());
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
    let opts = boot::RunOptions {
        config_path: args.config,
        reload_interval: args.reload_interval,
        threads: args.threads,
    };
    match boot::run(cfg, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-gateway: {e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
