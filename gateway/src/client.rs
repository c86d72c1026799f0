//! The CLI's side of the local API: every command that needs the network asks the node's own
//! running gateway, so one process writes each audit log.

use std::time::Duration;

use serde::de::DeserializeOwned;
use thiserror::Error;

use fedgate_catalog::NodeId;

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

/// The body of `POST /v1/query`; `timeout` bounds each wait for the peer.
pub fn query_body(
    peer: &NodeId,
    dataset: &str,
    purpose: &str,
    filters: &[(String, String)],
    limit: Option<u64>,
    timeout: Duration,
) -> serde_json::Value {
    let filters: serde_json::Map<String, serde_json::Value> =
        filters.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    serde_json::json!({
        "peer": peer.to_string(), "dataset": dataset, "purpose": purpose, "where": filters, "limit": limit,
        "timeout_ms": u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    })
}

/// One line of the local API's streamed answer to `/v1/query` (docs/openapi.yaml): a record,
/// the verified end, or why the transfer failed.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerLine {
    /// A record: field names to values, in the provider's field order.
    Record(serde_json::Map<String, serde_json::Value>),
    /// `{"@end": {...}}`: the transfer ended and was checked against the signed trailer.
    End(End),
    /// `{"@error": "..."}`: the transfer failed; the gateway's reason.
    Error(String),
}

/// What the `@end` line vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// Records the provider signed for.
    pub count: u64,
    /// Why the provider stopped short (`limit`, `quota`, ...), if it did.
    pub truncated: Option<String>,
}

/// Why the answer to a query could not be read to its verified end.
#[derive(Debug, Error)]
pub enum AnswerError {
    /// Reading the answer failed.
    #[error("reading the gateway's answer: {0}")]
    Read(std::io::Error),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("writing the output: {0}")]
    Write(std::io::Error),
    /// A line is not what the API sends.
    #[error("line {line} of the gateway's answer: {why}")]
    Garbled {
        /// 1-based line number in the answer.
        line: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The gateway reported the transfer failed.
    #[error("{0}")]
    Failed(String),
    /// The answer stopped before its `@end` line.
    #[error("incomplete transfer from {peer}: the gateway's answer ended early")]
    EndedEarly {
        /// The providing node.
        peer: String,
    },
}

/// Parses one line of the answer.
pub fn parse_line(text: &str) -> Result<AnswerLine, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let serde_json::Value::Object(mut obj) = v else {
        return Err("not a JSON object".into());
    };
    if let Some(err) = obj.get("@error") {
        return Ok(AnswerLine::Error(err.as_str().unwrap_or("transfer failed").to_owned()));
    }
    if let Some(end) = obj.remove("@end") {
        let count = end.get("count").and_then(serde_json::Value::as_u64).ok_or("@end without a count")?;
        let truncated = end.get("truncated").and_then(|t| t.as_str()).map(str::to_owned);
        return Ok(AnswerLine::End(End { count, truncated }));
    }
    Ok(AnswerLine::Record(obj))
}

/// Reads the answer to its `@end`, handing each record (and its line as sent) to `each`.
pub fn read_answer(
    reader: impl std::io::BufRead,
    peer: &NodeId,
    mut each: impl FnMut(&str, &serde_json::Map<String, serde_json::Value>) -> std::io::Result<()>,
) -> Result<End, AnswerError> {
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(AnswerError::Read)?;
        let garbled = |why| AnswerError::Garbled { line: i as u64 + 1, why };
        match parse_line(&line).map_err(garbled)? {
            AnswerLine::Record(rec) => each(&line, &rec).map_err(AnswerError::Write)?,
            AnswerLine::End(end) => return Ok(end),
            AnswerLine::Error(why) => return Err(AnswerError::Failed(why)),
        }
    }
    Err(AnswerError::EndedEarly { peer: peer.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Result<End, AnswerError>, Vec<String>) {
        let peer: NodeId = "court@wuxi.xinwu".parse().unwrap();
        let mut seen = Vec::new();
        let r = read_answer(text.as_bytes(), &peer, |line, rec| {
            assert!(rec.is_empty() || line.starts_with('{'));
            seen.push(rec.keys().cloned().collect::<Vec<_>>().join(","));
            Ok(())
        });
        (r, seen)
    }

    #[test]
    fn records_in_field_order_then_the_end() {
        let (r, seen) = read(
            "{\"b\":1,\"a\":\"x\"}\n{\"b\":2,\"a\":null}\n{\"@end\":{\"count\":2,\"truncated\":\"limit\"}}\n",
        );
        assert_eq!(r.unwrap(), End { count: 2, truncated: Some("limit".into()) });
        assert_eq!(seen, ["b,a", "b,a"]);
    }

    #[test]
    fn errors_early_ends_and_garbage_are_told_apart() {
        let (r, seen) = read("{\"a\":1}\n{\"@error\":\"provider went away\"}\n");
        assert!(matches!(r, Err(AnswerError::Failed(ref m)) if m == "provider went away"));
        assert_eq!(seen.len(), 1);
        let (r, _) = read("{\"a\":1}\n");
        assert_eq!(
            r.unwrap_err().to_string(),
            "incomplete transfer from court@wuxi.xinwu: the gateway's answer ended early"
        );
        let (r, _) = read("{\"a\":1}\nnot json\n");
        assert!(matches!(r, Err(AnswerError::Garbled { line: 2, .. })));
        let (r, _) = read("[1,2]\n");
        assert!(matches!(r, Err(AnswerError::Garbled { line: 1, .. })));
        let (r, _) = read("{\"@end\":{}}\n");
        assert!(matches!(r, Err(AnswerError::Garbled { line: 1, ref why }) if why.contains("count")));
    }
}
