//! Run the API-server stand-in on its own, for trying the operator and gateway by hand:
//!
//! ```sh
//! cargo run -p switchboard-e2e --bin apiserver-standin -- 127.0.0.1:6443 > /tmp/kubeconfig
//! KUBECONFIG=/tmp/kubeconfig switchboard-operator --base-config base.yaml ...
//! ```
//!
//! Prints a kubeconfig for it on stdout (default namespace `default`), then serves until killed.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::net::SocketAddr;

use switchboard_e2e::apiserver::ApiServer;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{a}: {e}"))
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 6443)),
    };
    let server = ApiServer::bind(addr).await?;
    print!("{}", server.kubeconfig("default"));
    eprintln!("API-server stand-in on {} (Ctrl-C to stop)", server.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
