//! The web console for stewards, operators and auditors, served by the gateway itself on the
//! address `console = "HOST:PORT"` of gateway.toml (off when absent).
//!
//! - [`accounts`]: accounts and roles, Argon2id hashes in `state_dir/console.db`.
//! - [`sessions`]: sessions (256-bit ids, idle expiry) and login throttling, pure.
//! - [`csrf`]: the token every form carries and every POST is checked against.
//! - [`i18n`]: the strings, one table per language (zh-CN by default, English).
//! - [`chart`]: the overview's volume chart as inline SVG, pure.
//! - [`pages`]: the askama templates' structs; [`views`] fills them from the node's state.
//! - [`upload`]: `multipart/form-data` bodies (file uploads), pure; [`reconcile`]: a peer's
//!   uploaded audit export reconciled with this node's log, as `fedgate audit reconcile` does.
//! - [`server`]: routes, login, the role each page and action needs, audit entries.
//!
//! Every asset is compiled in; the console loads nothing from anywhere else.

pub mod accounts;
pub mod chart;
pub mod csrf;
pub mod i18n;
pub mod pages;
pub mod reconcile;
pub mod server;
pub mod sessions;
pub mod upload;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::state::Shared;

/// Binds the console's address; a failure names it.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves the console on `listener` for `shared`, with the accounts in `accounts`, until the
/// task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    accounts: Arc<accounts::AccountStore>,
) {
    let st = server::ConsoleState { shared, accounts, sessions: Arc::default(), throttle: Arc::default() };
    let changes = server::audit_account_changes(st.clone());
    let app = server::router(st).into_make_service_with_connect_info::<SocketAddr>();
    tokio::select! {
        r = axum::serve(listener, app) => if let Err(e) = r {
            tracing::error!(error = %e, "console stopped");
        },
        () = changes => {}
    }
}
