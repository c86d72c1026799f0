//! A small cookie-keeping HTTP/1.1 client for the web console, written against the socket so a
//! test sees statuses, headers and cookies exactly as a browser would get them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// Every value of header `name` (lowercase).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }
}

/// Percent-encodes a form value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first `name="csrf" value="…"` in a page.
pub fn csrf_in(body: &str) -> Option<String> {
    let at = body.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    Some(body[at..].split('"').next()?.to_owned())
}

/// A browser-like client: keeps cookies across requests.
pub struct Client {
    pub addr: SocketAddr,
    pub cookies: BTreeMap<String, String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, cookies: BTreeMap::new() }
    }

    pub async fn request(&mut self, method: &str, path: &str, body: &str) -> Answer {
        self.send(method, path, "application/x-www-form-urlencoded", body.as_bytes()).await
    }

    /// Posts a `multipart/form-data` form as a browser uploads files: each field is (name,
    /// file name if it is a file, content).
    pub async fn upload(&mut self, path: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Answer {
        let boundary = "----fedgateTestBoundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (name, file, data) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
            );
            if let Some(f) = file {
                body.extend_from_slice(
                    format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes(),
                );
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.send("POST", path, &format!("multipart/form-data; boundary={boundary}"), &body).await
    }

    /// Sends one request with `body` of `content_type`, keeping the cookies the answer sets.
    pub async fn send(&mut self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        let cookie: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let cookie =
            if cookie.is_empty() { String::new() } else { format!("Cookie: {}\r\n", cookie.join("; ")) };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: console\r\n{cookie}Content-Type: {content_type}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        // A server refusing a large body may close before reading it all.
        let _ = s.write_all(body).await;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked { super::api::dechunk(body) } else { body.to_owned() };
        for (k, v) in &headers {
            if k != "set-cookie" {
                continue;
            }
            let Some((name, value)) = v.split(';').next().and_then(|kv| kv.split_once('=')) else { continue };
            if v.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Answer { status, headers, body }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.request("GET", path, "").await
    }

    /// Posts `fields` form-encoded.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
        self.request("POST", path, &body.join("&")).await
    }

    /// Opens the login page and logs in; the answer to the login POST.
    pub async fn login(&mut self, name: &str, password: &str) -> Answer {
        let form = self.get("/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let token = csrf_in(&form.body).expect("the login form carries a CSRF token");
        self.post("/login", &[("csrf", &token), ("name", name), ("password", password)]).await
    }

    /// The session's CSRF token, read from a page's forms.
    pub async fn csrf(&mut self) -> String {
        let page = self.get("/").await;
        assert_eq!(page.status, 200, "{}", page.body);
        csrf_in(&page.body).expect("pages carry the session's CSRF token")
    }
}
