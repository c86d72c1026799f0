//! A small W3C WebDriver client (the HTTP protocol chromedriver speaks), enough to drive a real
//! headless Chromium through the console: open pages, type, click, read the page, screenshot.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where Debian's packages put the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key W3C WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a page or an element may take to appear (a loaded CI machine is slow, never this).
const WAIT: Duration = Duration::from_secs(30);

/// True if and only if the browser and its driver are installed. With `CI` set their absence
/// fails the test (CI installs them); elsewhere it is said and the test passes.
pub fn browser_present() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {CHROMIUM} or {CHROMEDRIVER} is missing: .ci/run installs chromium and chromium-driver"
        );
        eprintln!("SKIPPED: no {CHROMIUM} / {CHROMEDRIVER} (apt-get install chromium chromium-driver)");
    }
    present
}

/// A running chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP exchange with chromedriver. It keeps connections open whatever the request says,
/// so the answer is read by its Content-Length, never to the end of the stream.
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let (head_len, length) = loop {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{method} {path}: connection closed before an answer"));
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| format!("{method} {path}: no Content-Length in {head}"))?;
            break (end + 4, length);
        }
    };
    while raw.len() < head_len + length {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{method} {path}: answer cut at {} of {length} bytes", raw.len() - head_len));
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_len..head_len + length]).into_owned();
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{method} {path}: {e}: {body}"))?;
    if v["value"].get("error").is_some() {
        return Err(format!("{method} {path}: {}", v["value"]));
    }
    Ok(v["value"].clone())
}

impl Driver {
    /// Starts chromedriver and waits until it is ready. chromedriver cannot take port 0, so a
    /// free port is found by binding; if another process takes it before chromedriver does,
    /// chromedriver exits and another port is tried.
    pub async fn start() -> Driver {
        for _ in 0..8 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            #[allow(clippy::zombie_processes)] // killed and waited for in Drop, or below
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + WAIT;
            loop {
                if let Ok(v) = call(addr, "GET", "/status", None).await {
                    if v["ready"] == true {
                        return Driver { child, addr };
                    }
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // the port was taken: try another
                }
                assert!(Instant::now() < deadline, "chromedriver did not become ready on port {port}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.wait();
        }
        panic!("chromedriver did not start on any of 8 free ports");
    }

    /// A new headless Chromium session with a fresh profile in `profile`; finding an element
    /// waits for it up to [`WAIT`].
    pub async fn session(&self, profile: &Path) -> Session {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,1300".into(),
            "--lang=zh-CN".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let v = call(self.addr, "POST", "/session", Some(&caps)).await.expect("a browser session");
        let s = Session { addr: self.addr, id: v["sessionId"].as_str().expect("a session id").to_owned() };
        let ms = WAIT.as_millis() as u64;
        s.cmd("POST", "/timeouts", Some(json!({"implicit": ms, "pageLoad": ms, "script": ms})))
            .await
            .unwrap();
        s
    }
}

/// One browser.
pub struct Session {
    addr: SocketAddr,
    id: String,
}

impl Session {
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        call(self.addr, method, &format!("/session/{}{path}", self.id), body.as_ref()).await
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await.unwrap();
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", None).await.unwrap().as_str().unwrap_or_default().to_owned()
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        self.cmd("GET", "/title", None).await.unwrap().as_str().unwrap_or_default().to_owned()
    }

    /// The current address.
    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None).await.unwrap().as_str().unwrap_or_default().to_owned()
    }

    /// The element `css` selects, waiting for it; panics naming it if none comes.
    pub async fn find(&self, css: &str) -> String {
        let found = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        let v = match found {
            Ok(v) => v,
            Err(e) => {
                let at = self.url().await;
                let page: String = self.source().await.chars().take(4000).collect();
                panic!("no element {css} on {at}: {e}\n{page}")
            }
        };
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("element {css}: {v}")).to_owned()
    }

    /// The visible text of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.cmd("GET", &format!("/element/{el}/text"), None)
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Types `text` into the (cleared) field `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({}))).await.unwrap();
        self.cmd("POST", &format!("/element/{el}/value"), Some(json!({"text": text}))).await.unwrap();
    }

    /// Chooses `files` in the file input `css` selects (several for a `multiple` one).
    pub async fn attach(&self, css: &str, files: &[&Path]) {
        let el = self.find(css).await;
        let text: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        self.cmd("POST", &format!("/element/{el}/value"), Some(json!({"text": text.join("\n")})))
            .await
            .unwrap();
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({}))).await.unwrap();
    }

    /// Clicks `css` (a submit button or a link) and waits until the page that answers has replaced
    /// this one (its `marker` element, absent before, is there).
    pub async fn submit_and_wait(&self, css: &str, marker: &str) {
        self.click(css).await;
        self.find(marker).await;
    }

    /// Runs `script` in the page with `args` (WebDriver's scripts are not bound by the page's
    /// Content-Security-Policy).
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": args}))).await.unwrap()
    }

    /// Forgets every cookie of the current page's site.
    pub async fn delete_cookies(&self) {
        self.cmd("DELETE", "/cookie", None).await.unwrap();
    }

    /// The cookies the browser holds for the current page, as WebDriver reports them.
    pub async fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None).await.unwrap().as_array().cloned().unwrap_or_default()
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let v = self.cmd("GET", "/screenshot", None).await.unwrap();
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session (the browser quits).
    pub async fn quit(self) {
        let _ = self.cmd("DELETE", "", None).await;
    }
}
