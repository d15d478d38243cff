//! `[hook]`: where and how the HTTP trigger hook listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use schemas::config::ConfigError;

/// `[hook]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// Address the hook listens on; the hook is off until a token is set.
    pub listen: String,
    /// Bearer token clients must send (`Authorization: Bearer TOKEN`); empty: see token_file.
    pub token: String,
    /// File holding the token (first line), so it stays out of the config; empty: none.
    pub token_file: PathBuf,
    /// Allow a listen address that is not loopback (the hook has no TLS).
    pub allow_remote: bool,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Largest Alertmanager webhook body accepted (`POST /v1/alertmanager`), bytes:
    /// Alertmanager sends a group of alerts at once.
    pub max_alert_body_bytes: usize,
    /// Time a client has to send the request headers, e.g. "2s" (slow-loris guard).
    #[serde(with = "schemas::units::duration")]
    pub header_timeout: Duration,
    /// Time a request may take from its headers to the answer, body included.
    #[serde(with = "schemas::units::duration")]
    pub request_timeout: Duration,
    /// Longest a connection may stay open (idle keep-alive connections included).
    #[serde(with = "schemas::units::duration")]
    pub connection_timeout: Duration,
    /// Connections served at once; past it a new one replaces the oldest with no request in
    /// flight (a new one is closed only when all are busy).
    pub max_connections: usize,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            listen: "127.0.0.1:7341".into(),
            token: String::new(),
            token_file: PathBuf::new(),
            allow_remote: false,
            max_body_bytes: 16 * 1024,
            max_alert_body_bytes: 256 * 1024,
            header_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

impl HookConfig {
    /// Checks the values; does not read the token file.
    pub fn check(&self) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(ConfigError::Invalid(format!(
                "hook.listen {addr} is not a loopback address; the hook has no TLS, so set \
                 hook.allow_remote = true only behind something that adds it"
            )));
        }
        if !self.token.is_empty() && !self.token_file.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "set hook.token or hook.token_file, not both".into(),
            ));
        }
        if !self.token.is_empty() && self.token.len() < 16 {
            return Err(ConfigError::Invalid(
                "hook.token must be at least 16 characters".into(),
            ));
        }
        if !(256..=1 << 20).contains(&self.max_body_bytes) {
            return Err(ConfigError::Invalid(
                "hook.max_body_bytes must be 256 to 1048576".into(),
            ));
        }
        if !(256..=4 << 20).contains(&self.max_alert_body_bytes) {
            return Err(ConfigError::Invalid(
                "hook.max_alert_body_bytes must be 256 to 4194304".into(),
            ));
        }
        for (name, v) in [
            ("hook.header_timeout", self.header_timeout),
            ("hook.request_timeout", self.request_timeout),
            ("hook.connection_timeout", self.connection_timeout),
        ] {
            if !(Duration::from_millis(10)..=Duration::from_secs(600)).contains(&v) {
                return Err(ConfigError::Invalid(format!("{name} must be 10ms to 10m")));
            }
        }
        if !(1..=4096).contains(&self.max_connections) {
            return Err(ConfigError::Invalid(
                "hook.max_connections must be 1 to 4096".into(),
            ));
        }
        Ok(())
    }

    /// Whether a token is configured (the hook serves only then).
    pub fn enabled(&self) -> bool {
        !self.token.is_empty() || !self.token_file.as_os_str().is_empty()
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "hook.listen {:?} must be IP:PORT, e.g. 127.0.0.1:7341",
                self.listen
            ))
        })
    }

    /// The token: `token`, or the first line of `token_file`.
    pub fn load_token(&self) -> Result<String, ConfigError> {
        if !self.token.is_empty() {
            return Ok(self.token.clone());
        }
        schemas::config::read_token_file("hook.token_file", &self.token_file)
    }
}
