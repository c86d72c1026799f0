//! A minimal HTTP/1.1 client for the local API, written against the socket so a test sees the
//! status and body exactly as an application would (chunked bodies joined).

use std::net::SocketAddr;

use fedgate_gateway::node::RunningNode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request with a bearer token and a JSON body (empty for GET); (status, body).
pub async fn http(addr: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.into()
    };
    (status, body)
}

/// A chunked body's data, joined.
pub fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// The node's API token.
pub fn token(n: &RunningNode) -> String {
    std::fs::read_to_string(&n.config().api_token).unwrap().trim().to_owned()
}

/// A request to the node's API; the body as JSON, or as a JSON string when it is not JSON.
pub async fn api(n: &RunningNode, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http(n.api_addr(), &token(n), method, path, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}
