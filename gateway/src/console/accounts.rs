//! Console accounts: name, role and an Argon2id password hash, in `state_dir/console.db`
//! (SQLite, created 0600). Written by `fedgate user add|passwd|remove`, read by the console.
//!
//! Only hashes are stored: a stolen file costs an attacker one Argon2id evaluation (19 MiB,
//! two passes) per guess per account.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;

/// What an account may do in the console; enforced by the server on every page and action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Catalog, grants and explain, sharing requests (approve, refuse, revoke).
    Steward,
    /// Status, peers, certificates, subscriptions, referrals.
    Operator,
    /// The audit log: search, details, verify, inclusion proofs; never records.
    Auditor,
}

impl Role {
    /// The role's name as the CLI and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Steward => "steward",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Steward, Role::Operator, Role::Auditor].into_iter().find(|r| r.as_str() == s)
    }
}

/// Shortest password accepted: Argon2id slows guessing, it cannot save a short password.
pub const MIN_PASSWORD: usize = 10;
/// Longest password accepted (bytes), so a login form cannot make the server hash megabytes.
pub const MAX_PASSWORD: usize = 1024;

/// Why an account operation failed.
#[derive(Debug, Error)]
pub enum AccountError {
    /// The account file could not be created or opened.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("{path}: {source}")]
    Db {
        /// The file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The name is not a valid account name.
    #[error("account name {0:?}: use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter")]
    BadName(String),
    /// The password is too short or too long.
    #[error("the password must be {MIN_PASSWORD} to {MAX_PASSWORD} bytes long")]
    BadPassword,
    /// `add` of a name that exists.
    #[error("account {0} already exists (use `fedgate user passwd` to change its password)")]
    Exists(String),
    /// `passwd` or `remove` of a name that does not exist.
    #[error("no account {0}")]
    Unknown(String),
    /// The stored hash is not a PHC string, or hashing failed.
    #[error("password hash: {0}")]
    Hash(String),
}

/// An account name: 1 to 64 of `a-z0-9._-`, starting with a letter (it appears in audit
/// entries and logs, so it is kept plain).
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let mut b = name.bytes();
    let ok = matches!(b.next(), Some(c) if c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(AccountError::BadName(name.to_owned()))
    }
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
        Ok(())
    } else {
        Err(AccountError::BadPassword)
    }
}

/// The Argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| AccountError::Hash("no system randomness for a salt".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// True if and only if `password` matches the PHC string `hash`.
pub fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, updated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, action TEXT NOT NULL,
    name TEXT NOT NULL, role TEXT NOT NULL, via TEXT NOT NULL);
";

/// An account change not yet in the node's audit log. `fedgate user` runs while the gateway
/// may be running, and only the gateway writes the log, so each change is written next to
/// the account in one transaction, and the gateway's console moves it into the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Order of the changes.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// `add`, `passwd` or `remove`.
    pub action: String,
    /// The account.
    pub name: String,
    /// Its role (when removed: the role it had).
    pub role: String,
    /// What made it: `fedgate user` or `console`.
    pub via: String,
}

/// What made a change: the CLI.
pub const VIA_CLI: &str = "fedgate user";
/// What made a change: the account itself in the console.
pub const VIA_CONSOLE: &str = "console";

/// A short digest of a password hash: sessions remember it at login and end when it changes
/// (the hash has a fresh salt at every `add` and `passwd`, so any new password changes it).
pub fn stamp(hash: &str) -> String {
    fedgate_catalog::hex(&ring::digest::digest(&ring::digest::SHA256, hash.as_bytes()).as_ref()[..16])
}

/// The console's accounts.
pub struct AccountStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Hashed against when an unknown name logs in, so the answer takes as long as for a
    /// known one and does not tell which names exist.
    decoy: String,
}

impl AccountStore {
    /// Opens (creating, mode 0600) the account file at `path`.
    pub fn open(path: &Path) -> Result<AccountStore, AccountError> {
        create_private(path).map_err(|source| AccountError::File { path: path.to_owned(), source })?;
        let conn = crate::state_db::open(
            path,
            SCHEMA,
            |path, source| AccountError::File { path, source },
            |source| AccountError::Db { path: path.to_owned(), source },
        )?;
        let decoy = hash_password("decoy password, never a real one")?;
        Ok(AccountStore { path: path.to_owned(), conn: Mutex::new(conn), decoy })
    }

    /// The account file of a node whose state folder is `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("console.db")
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, AccountError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| AccountError::Db { path: self.path.clone(), source })
    }

    /// Runs `f` in one transaction; if it changed an account (`Some(role)`), records the
    /// change for the audit log in the same transaction.
    fn change(
        &self,
        action: &str,
        name: &str,
        via: &str,
        now: i64,
        f: impl FnOnce(&Connection) -> rusqlite::Result<Option<String>>,
    ) -> Result<bool, AccountError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let Some(role) = f(&tx)? else { return Ok(false) };
            tx.execute(
                "INSERT INTO changes (at, action, name, role, via) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now, action, name, role, via],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Adds account `name` with `role`; refused if the name exists.
    pub fn add(&self, name: &str, role: Role, password: &str, now: i64) -> Result<(), AccountError> {
        check_name(name)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        let added = self.change("add", name, VIA_CLI, now, |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO accounts (name, role, hash, updated) VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), hash, now],
            )?;
            Ok((n > 0).then(|| role.as_str().to_owned()))
        })?;
        if !added {
            return Err(AccountError::Exists(name.to_owned()));
        }
        Ok(())
    }

    /// Sets a new password for `name` (by `fedgate user passwd`).
    pub fn passwd(&self, name: &str, password: &str, now: i64) -> Result<(), AccountError> {
        self.passwd_via(name, password, now, VIA_CLI)
    }

    /// Sets a new password for `name`, the change made `via` the CLI or the console.
    pub fn passwd_via(&self, name: &str, password: &str, now: i64, via: &str) -> Result<(), AccountError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        let changed = self.change("passwd", name, via, now, |c| {
            let role = role_in(c, name)?;
            if role.is_some() {
                c.execute(
                    "UPDATE accounts SET hash = ?2, updated = ?3 WHERE name = ?1",
                    params![name, hash, now],
                )?;
            }
            Ok(role)
        })?;
        if !changed {
            return Err(AccountError::Unknown(name.to_owned()));
        }
        Ok(())
    }

    /// Removes `name`.
    pub fn remove(&self, name: &str) -> Result<(), AccountError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let removed = self.change("remove", name, VIA_CLI, now, |c| {
            let role = role_in(c, name)?;
            c.execute("DELETE FROM accounts WHERE name = ?1", params![name])?;
            Ok(role)
        })?;
        if !removed {
            return Err(AccountError::Unknown(name.to_owned()));
        }
        Ok(())
    }

    /// The changes not yet in the audit log, oldest first.
    pub fn pending(&self) -> Result<Vec<Change>, AccountError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT seq, at, action, name, role, via FROM changes ORDER BY seq")?;
            let rows = st.query_map([], |r| {
                Ok(Change {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    action: r.get(2)?,
                    name: r.get(3)?,
                    role: r.get(4)?,
                    via: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Change `seq` is in the audit log.
    pub fn done(&self, seq: i64) -> Result<(), AccountError> {
        self.with(|c| c.execute("DELETE FROM changes WHERE seq = ?1", params![seq])).map(drop)
    }

    /// The role of `name` and the [`stamp`] of its password, if the account exists.
    pub fn current(&self, name: &str) -> Result<Option<(Role, String)>, AccountError> {
        let row: Option<(String, String)> = self.with(|c| {
            c.query_row("SELECT role, hash FROM accounts WHERE name = ?1", params![name], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })?;
        Ok(row.and_then(|(role, hash)| Some((Role::parse(&role)?, stamp(&hash)))))
    }

    /// The role of `name`, if the account exists (sessions are re-checked against it, so a
    /// removed account or a changed role takes effect at once).
    pub fn role_of(&self, name: &str) -> Result<Option<Role>, AccountError> {
        let role: Option<String> = self.with(|c| {
            c.query_row("SELECT role FROM accounts WHERE name = ?1", params![name], |r| r.get(0)).optional()
        })?;
        Ok(role.as_deref().and_then(Role::parse))
    }

    /// Every account, name and role, by name.
    pub fn list(&self) -> Result<Vec<(String, Role)>, AccountError> {
        let rows: Vec<(String, String)> = self.with(|c| {
            let mut st = c.prepare("SELECT name, role FROM accounts ORDER BY name")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        Ok(rows.into_iter().filter_map(|(n, r)| Role::parse(&r).map(|r| (n, r))).collect())
    }

    /// The role of `name` if `password` is its password. Slow on purpose (Argon2id): call it
    /// off the async threads.
    pub fn verify(&self, name: &str, password: &str) -> Result<Option<Role>, AccountError> {
        Ok(self.login(name, password)?.map(|(role, _)| role))
    }

    /// The role of `name` and the [`stamp`] of its password, if `password` is its password.
    /// Slow on purpose (Argon2id): call it off the async threads.
    pub fn login(&self, name: &str, password: &str) -> Result<Option<(Role, String)>, AccountError> {
        if password.len() > MAX_PASSWORD {
            return Ok(None);
        }
        let row: Option<(String, String)> = self.with(|c| {
            c.query_row("SELECT role, hash FROM accounts WHERE name = ?1", params![name], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })?;
        match row {
            Some((role, hash)) if password_matches(password, &hash) => {
                Ok(Role::parse(&role).map(|r| (r, stamp(&hash))))
            }
            Some(_) => Ok(None),
            None => {
                let _ = password_matches(password, &self.decoy);
                Ok(None)
            }
        }
    }
}

fn role_in(c: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    c.query_row("SELECT role FROM accounts WHERE name = ?1", params![name], |r| r.get(0)).optional()
}

/// Creates `path` empty with mode 0600 if it does not exist (SQLite gives its journal files
/// the database file's mode), and its folder.
fn create_private(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_check_the_password() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(password_matches("correct horse battery", &h));
        assert!(!password_matches("correct horse batterY", &h));
        assert!(!password_matches("correct horse battery", "not a phc string"));
    }

    #[test]
    fn accounts_add_verify_passwd_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = AccountStore::path_in(dir.path());
        let s = AccountStore::open(&path).unwrap();
        s.add("wang.li", Role::Steward, "first password", 1).unwrap();
        assert!(matches!(s.add("wang.li", Role::Auditor, "other password", 2), Err(AccountError::Exists(_))));
        assert_eq!(s.verify("wang.li", "first password").unwrap(), Some(Role::Steward));
        assert_eq!(s.verify("wang.li", "wrong password").unwrap(), None);
        assert_eq!(s.verify("nobody", "first password").unwrap(), None);
        s.passwd("wang.li", "second password", 3).unwrap();
        assert_eq!(s.verify("wang.li", "first password").unwrap(), None);
        assert_eq!(s.verify("wang.li", "second password").unwrap(), Some(Role::Steward));
        s.remove("wang.li").unwrap();
        assert_eq!(s.role_of("wang.li").unwrap(), None);
        assert!(matches!(s.remove("wang.li"), Err(AccountError::Unknown(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn every_change_is_kept_for_the_audit_log_and_a_new_password_has_a_new_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let s = AccountStore::open(&dir.path().join("c.db")).unwrap();
        s.add("wang.li", Role::Steward, "first password", 1).unwrap();
        let (role, first) = s.current("wang.li").unwrap().unwrap();
        assert_eq!(s.login("wang.li", "first password").unwrap(), Some((role, first.clone())));
        s.passwd_via("wang.li", "second password", 2, VIA_CONSOLE).unwrap();
        let (_, second) = s.current("wang.li").unwrap().unwrap();
        assert_ne!(first, second, "sessions made with the old password end");
        assert!(s.add("wang.li", Role::Auditor, "third password", 3).is_err());
        assert!(s.passwd("nobody", "some password", 3).is_err());
        s.remove("wang.li").unwrap();
        let got: Vec<(String, String, String, String)> =
            s.pending().unwrap().into_iter().map(|c| (c.action, c.name, c.role, c.via)).collect();
        let want = [("add", VIA_CLI), ("passwd", VIA_CONSOLE), ("remove", VIA_CLI)]
            .map(|(a, v)| (a.to_owned(), "wang.li".to_owned(), "steward".to_owned(), v.to_owned()));
        assert_eq!(got, want, "refused changes leave nothing");
        let first = s.pending().unwrap()[0].seq;
        s.done(first).unwrap();
        assert_eq!(s.pending().unwrap().len(), 2);
    }

    #[test]
    fn names_and_passwords_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = AccountStore::open(&dir.path().join("c.db")).unwrap();
        for bad in ["", "Wang", "1abc", "a b", "张三", &"a".repeat(65)] {
            assert!(
                matches!(s.add(bad, Role::Auditor, "long enough pw", 0), Err(AccountError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(s.add("li", Role::Auditor, "short", 0), Err(AccountError::BadPassword)));
    }
}
