//! The CLI's side of the local API: every command that needs the network asks the node's own
//! running gateway, so one process writes each audit log.

use std::time::Duration;

use serde::de::DeserializeOwned;
use thiserror::Error;

use fedgate_catalog::NodeId;

use crate::config::Config;
use crate::error::ApiCode;

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
    /// The gateway accepted the request but did not answer in time: it is running, but slow or
    /// stuck (not the peer: the gateway bounds its own waits for peers and says so).
    #[error("the gateway's local API at {addr} took too long ({step}); it is running but slow or stuck: see its log")]
    TimedOut {
        /// The API address.
        addr: String,
        /// Which wait ran out (`receiving the response`, ...).
        step: String,
    },
    /// The token file could not be read.
    #[error("{path}: cannot read the API token: {why}")]
    Token {
        /// The token file.
        path: String,
        /// What failed.
        why: String,
    },
    /// The gateway answered with an error; `code` is the Error JSON's, when it named one this
    /// build knows.
    #[error("{}", api_message(*.code, .message))]
    Api {
        /// The API's error code (`denied`, `peer-timeout`, ...).
        code: Option<ApiCode>,
        /// The HTTP status.
        status: u16,
        /// The `error` text, or the body if it was not an Error JSON.
        message: String,
    },
    /// The gateway's answer could not be read or is not what the API sends.
    #[error("{0}")]
    Answer(String),
}

impl ClientError {
    /// The API's error code, if the gateway answered with one.
    pub fn code(&self) -> Option<ApiCode> {
        match self {
            ClientError::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// True if and only if the same request may succeed later unchanged: the API said so
    /// ([`ApiCode::is_transient`]) or the gateway was too slow to answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::TimedOut { .. }) || self.code().is_some_and(ApiCode::is_transient)
    }
}

/// `denied: court@wuxi.xinwu: no grant allows ...`: the code first, so a person and a script
/// both see the class of the failure.
fn api_message(code: Option<ApiCode>, message: &str) -> String {
    match code {
        Some(c) => format!("{c}: {message}"),
        None => message.to_owned(),
    }
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
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.into_body().read_to_string().unwrap_or_default();
            return Err(api_error(status.as_u16(), text));
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
            .map_err(|e| self.transport_error(e))?;
        let body = answer_text(resp)?;
        serde_json::from_str(&body).map_err(|e| ClientError::Answer(format!("unexpected answer: {e}")))
    }
}

impl Client {
    /// POSTs JSON to `path` (or DELETEs it, `body` `None`) and decodes the JSON answer.
    pub fn send_json(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let sent = match body {
            Some(b) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.to_string().as_bytes()),
            None => self.agent.delete(&url).header("Authorization", &auth).call(),
        };
        let text = answer_text(sent.map_err(|e| self.transport_error(e))?)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Answer(format!("unexpected answer: {e}")))
    }

    /// GETs `path` and returns the body as text.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.transport_error(e))?;
        answer_text(resp)
    }
}

impl Client {
    /// A failure to get an answer at all: not connecting is `Unreachable`; a gateway that took
    /// the connection and then did not answer in time is `TimedOut`, not "is it running?".
    fn transport_error(&self, e: ureq::Error) -> ClientError {
        use ureq::Timeout as T;
        match e {
            ureq::Error::Timeout(t) if !matches!(t, T::Resolve | T::Connect) => {
                ClientError::TimedOut { addr: self.base.clone(), step: t.to_string() }
            }
            e => ClientError::Unreachable {
                addr: self.base.clone(),
                config: self.config.clone(),
                why: e.to_string(),
            },
        }
    }
}

/// The error an answer with `status` and `body` stands for: the Error JSON's `error` and
/// `code`, or the body itself (and the code its status implies) if it is not one.
/// The whole answer as text, or the API's error when the status is not a success.
fn answer_text(resp: ureq::http::Response<ureq::Body>) -> Result<String, ClientError> {
    let status = resp.status();
    let text = resp
        .into_body()
        .read_to_string()
        .map_err(|e| ClientError::Answer(format!("reading the answer: {e}")))?;
    if !status.is_success() {
        return Err(api_error(status.as_u16(), text));
    }
    Ok(text)
}

fn api_error(status: u16, body: String) -> ClientError {
    let v = serde_json::from_str::<serde_json::Value>(&body).ok();
    let field = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(|e| e.as_str()).map(str::to_owned);
    let code = field("code").as_deref().and_then(ApiCode::parse);
    ClientError::Api { code, status, message: field("error").unwrap_or(body) }
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
    /// `{"@error": "...", "code": "..."}`: the transfer failed; the gateway's reason and code.
    Error {
        /// The API code of the failure (`incomplete`, `unverified`, ...), if it names a known
        /// one.
        code: Option<ApiCode>,
        /// The gateway's reason.
        message: String,
    },
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
    #[error("{}", api_message(*.code, .message))]
    Failed {
        /// The API code of the failure, if it named a known one.
        code: Option<ApiCode>,
        /// The gateway's reason.
        message: String,
    },
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
        let code = obj.get("code").and_then(|c| c.as_str()).and_then(ApiCode::parse);
        let message = err.as_str().unwrap_or("transfer failed").to_owned();
        return Ok(AnswerLine::Error { code, message });
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
            AnswerLine::Error { code, message } => return Err(AnswerError::Failed { code, message }),
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
        let (r, seen) = read("{\"a\":1}\n{\"@error\":\"provider went away\",\"code\":\"incomplete\"}\n");
        let err = r.unwrap_err();
        assert!(
            matches!(err, AnswerError::Failed { code: Some(ApiCode::Incomplete), ref message } if message == "provider went away"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "incomplete: provider went away");
        assert_eq!(seen.len(), 1);
        // A gateway that names no code (or one this build does not know) still fails.
        let (r, _) = read("{\"@error\":\"gone\",\"code\":\"from-the-future\"}\n");
        assert!(matches!(r, Err(AnswerError::Failed { code: None, .. })));
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

    #[test]
    fn an_error_answer_keeps_the_api_code() {
        let e = api_error(403, r#"{"error":"court@wuxi.xinwu: no grant allows it","code":"denied"}"#.into());
        assert_eq!(e.code(), Some(ApiCode::Denied));
        assert_eq!(e.to_string(), "denied: court@wuxi.xinwu: no grant allows it");
        let e = api_error(504, r#"{"error":"x timed out","code":"peer-timeout"}"#.into());
        assert!(matches!(e, ClientError::Api { code: Some(ApiCode::PeerTimeout), status: 504, .. }));
        // Not an Error JSON (a proxy in the way): the body is the message, no code.
        let e = api_error(502, "Bad Gateway".into());
        assert_eq!((e.code(), e.to_string()), (None, "Bad Gateway".to_owned()));
    }

    /// A client whose every call may take `d`.
    fn impatient(addr: std::net::SocketAddr, d: Duration) -> Client {
        let agent =
            ureq::Agent::config_builder().timeout_global(Some(d)).http_status_as_error(false).build().into();
        Client { base: format!("http://{addr}"), token: "t".into(), config: "gateway.toml".into(), agent }
    }

    #[test]
    fn a_gateway_that_accepts_but_never_answers_timed_out_and_one_not_listening_is_unreachable() {
        // Accepts (the kernel does, from the backlog) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = impatient(silent.local_addr().unwrap(), Duration::from_millis(300));
        let e = c.get_json::<serde_json::Value>("/v1/peers").unwrap_err();
        assert!(matches!(e, ClientError::TimedOut { .. }), "{e:?}");
        assert!(e.is_transient() && e.to_string().contains("running but slow or stuck"), "{e}");
        let e = c.post_lines("/v1/query", &serde_json::json!({})).map(|_| ()).unwrap_err();
        assert!(matches!(e, ClientError::TimedOut { .. }), "{e:?}");

        // Nothing listens: unreachable, with the hint to start it.
        let addr = silent.local_addr().unwrap();
        drop(silent);
        let e =
            impatient(addr, Duration::from_secs(5)).get_json::<serde_json::Value>("/v1/peers").unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        assert!(
            !e.is_transient() && e.to_string().contains("is `fedgate serve --config gateway.toml` running?"),
            "{e}"
        );
    }
}
