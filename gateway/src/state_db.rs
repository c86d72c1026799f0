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
