//! Opening the node's durable state files (the event log, subscriptions, referrals, sharing
//! requests): SQLite in WAL mode with full sync, so whatever a store call wrote survives SIGKILL
//! and power loss once it returns. Each store keeps its own error type; this is where the file
//! is made.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// Opens (creating its folder and the file) the state database at `path` and applies `schema`.
/// `folder` words a failure to create the folder, `db` any SQLite failure, in the caller's
/// error type.
pub(crate) fn open<E>(
    path: &Path,
    schema: &str,
    folder: impl FnOnce(PathBuf, std::io::Error) -> E,
    db: impl Fn(rusqlite::Error) -> E,
) -> Result<Connection, E> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| folder(dir.to_owned(), source))?;
    }
    let conn = Connection::open(path).map_err(&db)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;").map_err(&db)?;
    conn.execute_batch(schema).map_err(&db)?;
    Ok(conn)
}

/// A store's state database: the connection every call of the store takes in turn, and the
/// signal it gives after each change so waiting tasks wake at once instead of polling.
#[derive(Debug)]
pub(crate) struct StateDb {
    path: PathBuf,
    conn: std::sync::Mutex<Connection>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl StateDb {
    /// [`open`], kept with its path and a change signal.
    pub(crate) fn open<E>(
        path: &Path,
        schema: &str,
        folder: impl FnOnce(PathBuf, std::io::Error) -> E,
        db: impl Fn(rusqlite::Error) -> E,
    ) -> Result<StateDb, E> {
        let conn = open(path, schema, folder, db)?;
        Ok(StateDb { path: path.to_owned(), conn: conn.into(), changed: tokio::sync::watch::Sender::new(0) })
    }

    /// The file, for error messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The connection. A panic while another call held it leaves nothing half-written (every
    /// change is one SQLite transaction), so a poisoned lock is taken as it is.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every [`StateDb::changes`] receiver that something changed.
    pub(crate) fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every [`StateDb::bump`].
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
