//! The `GatewayConfig` snapshot: one typed, versioned document that is both the standalone
//! config file of `switchboard-gateway --config FILE` and what the operator writes for a cluster.
//!
//! This crate does no I/O: it parses text, fills defaults and validates the whole document,
//! returning every problem with the path of the bad field. The gateway loads files and keys;
//! the operator compiles `RealtimeRoute`s into this type.
//!
//! ```
//! let cfg = switchboard_config::GatewayConfig::from_yaml(
//!     "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: [{name: public, address: '127.0.0.1:8080'}]\nroutes: []\n",
//! ).unwrap();
//! assert_eq!(cfg.listeners[0].name, "public");
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod duration;
pub mod keys;
mod model;
pub mod origin;
pub mod path;
pub mod room;
mod validate;

pub use model::*;
pub use validate::{MIN_SIGNATURE_SECRET_BYTES, Problem, match_keys, namespace_clashes, validate};

/// The `apiVersion` this crate reads and writes.
pub const API_VERSION: &str = "switchboard.dev/v1alpha1";
/// The `kind` of the document.
pub const KIND: &str = "GatewayConfig";

/// Why a document could not be turned into a valid [`GatewayConfig`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not YAML/JSON of the right shape (unknown field, wrong type...).
    #[error("{path}: {message}")]
    Parse {
        /// Where in the document (`routes[2].jwt`, or `line:column` when no path is known).
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// The document parsed but breaks one or more rules.
    #[error("{}", Problem::join(.0))]
    Invalid(Vec<Problem>),
}

impl Error {
    /// Every problem of the error, with its path (a parse error is one problem).
    pub fn into_problems(self) -> Vec<Problem> {
        match self {
            Self::Parse { path, message } => vec![Problem { path, message }],
            Self::Invalid(problems) => problems,
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl GatewayConfig {
    /// Parse YAML (or JSON, a subset) and validate the whole document.
    pub fn from_yaml(text: &str) -> Result<Self> {
        // YAML -> JSON value first: the document has JSON semantics (what the operator writes),
        // and enums read as single-key maps (`{bearer: {}}`) rather than YAML tags. Through
        // YAML's own value, which refuses a key repeated in one mapping: a JSON map keeps the
        // last silently (`jwt:` then `jwt: null` would serve the route without a token).
        let parse = |message: String| Error::Parse {
            path: "(document)".into(),
            message,
        };
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| parse(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::to_value(yaml).map_err(|e| parse(e.to_string()))?;
        let cfg: GatewayConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            Error::Parse {
                path: if path == "." {
                    "(document)".into()
                } else {
                    path
                },
                message: e.inner().to_string(),
            }
        })?;
        let problems = validate(&cfg);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(Error::Invalid(problems))
        }
    }

    /// Serialize as YAML (what the operator writes into the snapshot object).
    pub fn to_yaml(&self) -> String {
        // Go through a JSON value so enums are written as single-key maps, like they are read.
        // Serializing plain data structs with string keys cannot fail.
        serde_json::to_value(self)
            .ok()
            .and_then(|v| serde_yaml_ng::to_string(&v).ok())
            .unwrap_or_default()
    }

    /// The route with this name, if any.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}
