//! Console sessions and login throttling. Pure: every call takes `now` (milliseconds), so
//! expiry and lock-outs are tested without waiting.
//!
//! A session id is 256 random bits, sent only as an HttpOnly, SameSite=Strict cookie; the
//! server keeps the session (account, role, CSRF token, last use) in memory, so a restart logs
//! everyone out.

use std::collections::HashMap;
use std::sync::Mutex;

use super::accounts::Role;

/// A session idle this long is gone (30 minutes, as government systems usually require).
pub const IDLE_MS: i64 = 30 * 60 * 1000;
/// Sessions held at once; past it the oldest idle one is dropped, so logins cannot exhaust memory.
pub const MAX_SESSIONS: usize = 10_000;

/// 256 random bits as 64 hex digits: session ids and CSRF tokens.
pub fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).ok()?;
    Some(fedgate_catalog::hex(&b))
}

/// A logged-in account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account name.
    pub user: String,
    /// Its role when it logged in (re-checked against the account store on each request).
    pub role: Role,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The account's password [`super::accounts::stamp`] at login: another one ends the session.
    pub stamp: String,
    last_used: i64,
}

/// The sessions in force.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`: its id (the cookie value) and the session.
    pub fn create(&self, user: &str, role: Role, stamp: &str, now: i64) -> Option<(String, Session)> {
        let id = random_token()?;
        let s = Session {
            user: user.to_owned(),
            role,
            csrf: random_token()?,
            stamp: stamp.to_owned(),
            last_used: now,
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| now - s.last_used < IDLE_MS);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), s.clone());
        Some((id, s))
    }

    /// The session `id` if it has not idled out; marks it used.
    pub fn touch(&self, id: &str, now: i64) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get_mut(id)?;
        if now - s.last_used >= IDLE_MS {
            map.remove(id);
            return None;
        }
        s.last_used = now;
        Some(s.clone())
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Ends every session of `user` (its password changed or it was removed).
    pub fn remove_user(&self, user: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| s.user != user);
    }
}

/// Failed logins counted per key within this window.
pub const WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failed logins one account may have in a window before it is locked for the rest of it.
pub const MAX_PER_ACCOUNT: u32 = 5;
/// Failed logins one client address may have in a window (several accounts behind one NAT).
pub const MAX_PER_ADDRESS: u32 = 20;
/// Keys tracked at most; past it expired ones are dropped, then the oldest.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: i64,
}

/// Failed-login counters per account and per client address.
#[derive(Default)]
pub struct Throttle {
    map: Mutex<HashMap<String, Failures>>,
}

/// A login refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// Milliseconds until the window ends.
    pub retry_after_ms: i64,
}

impl Throttle {
    fn key(account: Option<&str>, address: Option<&str>) -> String {
        match (account, address) {
            (Some(a), _) => format!("account:{a}"),
            (None, Some(ip)) => format!("address:{ip}"),
            (None, None) => String::new(),
        }
    }

    fn locked_key(&self, key: &str, max: u32, now: i64) -> Option<i64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let f = map.get(key)?;
        let left = f.since + WINDOW_MS - now;
        (f.count >= max && left > 0).then_some(left)
    }

    /// Refuses a login for `account` from `address` if either has failed too often lately.
    pub fn check(&self, account: &str, address: &str, now: i64) -> Result<(), Locked> {
        let a = self.locked_key(&Self::key(Some(account), None), MAX_PER_ACCOUNT, now);
        let b = self.locked_key(&Self::key(None, Some(address)), MAX_PER_ADDRESS, now);
        match a.max(b) {
            Some(retry_after_ms) => Err(Locked { retry_after_ms }),
            None => Ok(()),
        }
    }

    /// Counts a failed login for `account` from `address`.
    pub fn failed(&self, account: &str, address: &str, now: i64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, f| now - f.since < WINDOW_MS);
        }
        if map.len() >= MAX_KEYS {
            if let Some(oldest) = map.iter().min_by_key(|(_, f)| f.since).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        for key in [Self::key(Some(account), None), Self::key(None, Some(address))] {
            let f = map.entry(key).or_insert(Failures { count: 0, since: now });
            if now - f.since >= WINDOW_MS {
                *f = Failures { count: 0, since: now };
            }
            f.count += 1;
        }
    }

    /// A successful login clears the account's count (not the address's: one good account
    /// must not reset the budget for guessing others).
    pub fn succeeded(&self, account: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&Self::key(Some(account), None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_idle_out_and_are_random() {
        let s = Sessions::default();
        let (id, sess) = s.create("li", Role::Auditor, "stamp", 0).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, sess.csrf);
        assert!(s.touch(&id, IDLE_MS - 1).is_some(), "used just before expiry");
        assert!(s.touch(&id, 2 * IDLE_MS - 2).is_some(), "use extends the session");
        assert!(s.touch(&id, 3 * IDLE_MS).is_none(), "idle past the limit");
        assert!(s.touch(&id, 3 * IDLE_MS).is_none(), "and gone");
        let (id2, _) = s.create("li", Role::Auditor, "stamp", 0).unwrap();
        s.remove_user("li");
        assert!(s.touch(&id2, 1).is_none());
    }

    #[test]
    fn accounts_lock_after_failures_until_the_window_ends() {
        let t = Throttle::default();
        for _ in 0..MAX_PER_ACCOUNT {
            assert_eq!(t.check("li", "10.0.0.1", 1000), Ok(()));
            t.failed("li", "10.0.0.1", 1000);
        }
        let locked = t.check("li", "10.0.0.2", 2000).unwrap_err();
        assert_eq!(locked.retry_after_ms, WINDOW_MS - 1000);
        assert_eq!(t.check("wang", "10.0.0.2", 2000), Ok(()), "other accounts are not locked");
        assert_eq!(t.check("li", "10.0.0.2", 1000 + WINDOW_MS), Ok(()), "the window ends");
    }

    #[test]
    fn addresses_lock_across_accounts_and_success_keeps_their_count() {
        let t = Throttle::default();
        for i in 0..MAX_PER_ADDRESS {
            t.failed(&format!("user{i}"), "10.0.0.9", 0);
            t.succeeded(&format!("user{i}"));
        }
        assert!(t.check("fresh", "10.0.0.9", 1).is_err());
        assert!(t.check("fresh", "10.0.0.8", 1).is_ok());
    }
}
