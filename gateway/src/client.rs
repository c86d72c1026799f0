//! The CLI's side of the local API: every command that needs the network asks the node's own
//! running gateway, so one process writes each audit log.

use std::time::Duration;

use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::config::Config;

/// Why the local API could not answer.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The gateway is not running or not reachable.
    #[error("cannot reach the gateway's local API at {addr} (is `fedgate serve --config {config}` running?): {why}")]
    Unreachable {
        /// The API address.
        addr: String,
        /// The config file.
        config: String,
        /// What failed.
        why: String,
    },
    /// The token file could not be read.
    #[error("{path}: cannot read the API token: {why}")]
    Token {
        /// The token file.
        path: String,
        /// What failed.
        why: String,
    },
    /// The gateway answered with an error.
    #[error("{0}")]
    Api(String),
}

/// A client for one node's API.
pub struct Client {
    base: String,
    token: String,
    config: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for the node configured in `cfg`.
    pub fn new(cfg: &Config) -> Result<Client, ClientError> {
        let token = std::fs::read_to_string(&cfg.api_token).map_err(|e| ClientError::Token {
            path: cfg.api_token.display().to_string(),
            why: format!("{e} (the gateway creates it at its first start)"),
        })?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Client {
            base: format!("http://{}", cfg.api),
            token: token.trim().to_owned(),
            config: cfg.path.display().to_string(),
            agent,
        })
    }

    /// For a streamed answer that may last long: no bound on the whole call, but each read from
    /// the gateway may wait at most `wait` plus a margin. The gateway enforces `wait` towards
    /// the peer itself and says which step timed out; the margin lets its message arrive first.
    pub fn streaming(mut self, wait: Duration) -> Client {
        self.agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_per_read(Some(wait + Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        self
    }

    /// POSTs JSON to `path` and returns the response body as lines (for streamed answers).
    pub fn post_lines(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Box<dyn std::io::BufRead>, ClientError> {
        let resp = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| ClientError::Unreachable {
                addr: self.base.clone(),
                config: self.config.clone(),
                why: e.to_string(),
            })?;
        if !resp.status().is_success() {
            let text = resp.into_body().read_to_string().unwrap_or_default();
            return Err(ClientError::Api(error_message(text)));
        }
        Ok(Box::new(std::io::BufReader::new(resp.into_body().into_reader())))
    }

    /// GETs `path` and decodes JSON.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| ClientError::Unreachable {
                addr: self.base.clone(),
                config: self.config.clone(),
                why: e.to_string(),
            })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .read_to_string()
            .map_err(|e| ClientError::Api(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(ClientError::Api(error_message(body)));
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Api(format!("unexpected answer: {e}")))
    }
}

/// The `error` of a JSON error body, or the body itself.
fn error_message(body: String) -> String {
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(body)
}
