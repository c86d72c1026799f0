//! The local API's connection handling: a cap on connections served at once, a header-read
//! timeout and an idle timeout, so idle or slow clients cannot take the sockets and file
//! descriptors the federation link and the data sources need.
//!
//! 20,000 idle connections once exhausted the process's file descriptors, after which
//! federation queries failed too. Here, past the cap the API stops accepting: further
//! connections wait in the kernel's accept queue (costing this process no descriptor) until a
//! served one closes, and every served one closes once it idles past its timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::config::ApiLimits;

/// Connections the kernel may hold for us past the cap before refusing new ones (Linux caps it
/// at `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 4096;

/// How long to wait before accepting again after the process ran out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Binds the API's listening socket with a deep accept queue.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Raises this process's open-file soft limit to its hard limit and returns the new soft limit.
///
/// Each federation peer, API client, data source and audit file needs a descriptor; the usual
/// soft limit of 1024 is far below what the hard limit allows.
pub fn raise_fd_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Serves `app` on `listener` under `limits` until the task is aborted.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: ApiLimits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        // Waiting for a permit before accepting leaves the surplus in the kernel's queue.
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // EMFILE and friends: accepting again at once would spin.
                tracing::warn!(error = %e, "local API: accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        // Small answers are written in several pieces (headers, records, the control line);
        // without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to each.
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(IdleIo::new(tcp, limits.idle_timeout));
        let conn = http.serve_connection(io, TowerToHyperService::new(app.clone())).without_shutdown();
        tokio::spawn(async move {
            match conn.await {
                Ok(parts) => linger(parts.io.into_inner()).await,
                // Timeouts and clients that hang up are routine; nothing here is the node's fault.
                Err(e) => tracing::debug!(error = %e, "local API connection ended"),
            }
            drop(permit);
        });
    }
}

/// How long, and for how many bytes, a closing connection keeps reading what the client still
/// sends (see [`linger`]).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 8 << 20;

/// Closes a connection so that the client reads the answer already sent.
///
/// An answer can precede the end of its request: a body over the cap is refused as soon as its
/// length is known. Closing a socket with unread bytes makes the kernel send a reset, and a
/// client still writing its body then sees "broken pipe" instead of the refusal. So the write
/// side is shut first (the client sees the end of the answer), and what the client still
/// sends is read and dropped, bounded in time and bytes, before the socket is closed.
async fn linger(mut io: IdleIo) {
    use tokio::io::AsyncWriteExt;
    if io.shutdown().await.is_err() {
        return;
    }
    let mut rest = (&mut io.io).take(LINGER_BYTES);
    let _ = tokio::time::timeout(LINGER_TIME, tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
}

/// A TCP stream that fails with `TimedOut` once no byte has moved either way for `idle`.
struct IdleIo {
    io: TcpStream,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl IdleIo {
    fn new(io: TcpStream, idle: Duration) -> IdleIo {
        let last = Instant::now();
        IdleIo { io, idle, last, timer: Box::pin(tokio::time::sleep_until(last + idle)) }
    }

    /// Called when the stream would block: ready with an error once the idle time is up.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer is only moved when it fires, not on every byte.
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn idle_io_times_out_only_after_silence() {
        let (mut client, server) = pair().await;
        let idle = Duration::from_millis(400);
        let mut io = IdleIo::new(server, idle);
        let mut buf = [0u8; 8];
        // A byte every 250 ms keeps it open well past the first 400 ms.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        }
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        // Writes count as activity too, and a timed-out stream stays timed out.
        let (_client, server) = pair().await;
        let mut io = IdleIo::new(server, idle);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            io.write_all(b"y").await.unwrap();
        }
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// A client that writes a whole oversized body before reading still gets the refusal, not
    /// a reset: the server refuses at the Content-Length and then drains what follows.
    #[tokio::test]
    async fn an_early_refusal_reaches_a_client_still_writing_its_body() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/", axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }))
            .layer(axum::extract::DefaultBodyLimit::max(1024));
        let server = tokio::spawn(serve(listener, app, ApiLimits::default()));
        let body = vec![b'x'; 4 << 20];
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let head = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&body).await.expect("the server reads the body it refused instead of resetting");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        server.abort();
    }
}
