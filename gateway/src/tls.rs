//! TLS termination with rustls: certificates chosen by SNI, swapped atomically when the files
//! change (the config reload loop re-reads them), never interrupting live connections.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use switchboard_config::ListenerTls;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificates[{index}]: cannot read `{path}`: {source}")]
    Read {
        index: usize,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificates[{index}]: `{path}` holds no PEM certificate")]
    NoCertificate { index: usize, path: String },
    #[error("certificates[{index}]: `{path}` holds no usable private key")]
    NoKey { index: usize, path: String },
    #[error(
        "certificates[{index}]: the key in `{key}` does not belong to the certificate in `{cert}`"
    )]
    KeyMismatch {
        index: usize,
        cert: String,
        key: String,
    },
}

/// The certificates of one listener.
#[derive(Debug)]
pub struct CertSet {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// Load every certificate of `cfg` through `read` (file contents).
    pub fn load(
        cfg: &ListenerTls,
        read: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, TlsError> {
        let mut default = None;
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (index, c) in cfg.certificates.iter().enumerate() {
            let cert_pem = read(&c.cert_file).map_err(|source| TlsError::Read {
                index,
                path: c.cert_file.clone(),
                source,
            })?;
            let key_pem = read(&c.key_file).map_err(|source| TlsError::Read {
                index,
                path: c.key_file.clone(),
                source,
            })?;
            let chain: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut cert_pem.as_slice())
                    .filter_map(Result::ok)
                    .collect();
            if chain.is_empty() {
                return Err(TlsError::NoCertificate {
                    index,
                    path: c.cert_file.clone(),
                });
            }
            let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
                .ok()
                .flatten()
                .and_then(|k| any_supported_type(&k).ok())
                .ok_or_else(|| TlsError::NoKey {
                    index,
                    path: c.key_file.clone(),
                })?;
            let ck = CertifiedKey::new(chain, key);
            if ck.keys_match().is_err() {
                return Err(TlsError::KeyMismatch {
                    index,
                    cert: c.cert_file.clone(),
                    key: c.key_file.clone(),
                });
            }
            let ck = Arc::new(ck);
            default.get_or_insert_with(|| ck.clone());
            for h in &c.hostnames {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix("*.") {
                    Some(suffix) => wildcard.insert(suffix.to_string(), ck.clone()),
                    None => exact.insert(h, ck.clone()),
                };
            }
        }
        let default = default.ok_or(TlsError::NoCertificate {
            index: 0,
            path: String::new(),
        })?;
        Ok(Self {
            default,
            exact,
            wildcard,
        })
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(c) = self.exact.get(&name) {
            return c.clone();
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(c) = self.wildcard.get(parent)
        {
            return c.clone();
        }
        self.default.clone()
    }
}

/// SNI resolver over a swappable [`CertSet`].
#[derive(Debug)]
pub struct Resolver {
    pub certs: ArcSwap<CertSet>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certs.load().pick(hello.server_name()))
    }
}

/// A rustls server config (HTTP/1.1 only: WebSocket upgrades need it) over `resolver`.
pub fn server_config(resolver: Arc<Resolver>) -> Arc<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}
