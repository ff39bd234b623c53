//! `switchboard-operator`: parse flags, init tracing, load and validate the base config
//! (exit 64 when it is bad), then run until SIGTERM/SIGINT.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use switchboard_operator::admin::{self, Health};
use switchboard_operator::controller::{self, RunSettings};
use switchboard_operator::leader::LeaseSettings;
use switchboard_operator::metrics::Metrics;
use switchboard_operator::settings::{self, Args, LogFormat};
use tokio::sync::watch;
use tracing::{error, info};

/// Exit code for unusable configuration (sysexits `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    // Colour only for a person at a terminal: files, pipes and log collectors get plain text.
    // (The operator logs to stdout.)
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // One crypto provider (ring) for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    init_tracing(args.log_format);

    let base = match settings::load_base_config(&args.base_config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        println!("{}: valid", args.base_config.display());
        return ExitCode::SUCCESS;
    }
    let admin_service = match args.gateway_admin_service() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(args, base, admin_service).await {
        Ok(()) => {
            info!("stopped gracefully");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    args: Args,
    base: switchboard_config::GatewayConfig,
    admin_service: Option<(String, String)>,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no usable kubeconfig or in-cluster service account")?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let identity = args.identity();
    info!(%namespace, %identity, namespaces = ?args.namespaces, "starting switchboard-operator");

    let metrics = Metrics::new().context("registering metrics")?;
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(args.metrics_address)
        .await
        .with_context(|| format!("binding the admin listener {}", args.metrics_address))?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        listener,
        health.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown_tx.send_replace(true);
    });

    let settings = RunSettings {
        namespaces: args.namespaces.clone(),
        namespace: namespace.clone(),
        snapshot_name: args.snapshot_name.clone(),
        gateway_admin_service: admin_service,
        gateway_admin_port_name: args.gateway_admin_port_name.clone(),
        gateway_status_urls: args.gateway_status_urls.clone(),
        grace_period: args
            .gateway_termination_grace_period
            .map(std::time::Duration::from_secs),
        poll_interval: args.gateway_poll_interval,
        resync_interval: args.resync_interval,
        lease: LeaseSettings {
            namespace,
            name: args.lease_name.clone(),
            identity,
            duration: args.lease_duration,
        },
        secret_field_selector: args.secret_field_selector.clone(),
    };
    controller::run(client, base, settings, metrics, health, shutdown_rx).await?;
    let _ = admin_task.await;
    Ok(())
}
