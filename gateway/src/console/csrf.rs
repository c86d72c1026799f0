//! CSRF protection: every form carries a token the server checks on every POST.
//!
//! Logged-in forms carry the session's token (kept server-side with the session). The login
//! form, before any session, uses a double-submit token: a random value in a SameSite=Strict
//! cookie that the form must repeat. A missing or wrong token is a 403.

/// The form field every POST carries.
pub const FIELD: &str = "csrf";
/// The cookie holding the login form's token.
pub const LOGIN_COOKIE: &str = "fedgate_login_csrf";

/// True if and only if `given` is present and equals `expected`, compared in constant time.
pub fn matches(expected: &str, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.is_empty() || a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The login form's token: the one the browser already holds in [`LOGIN_COOKIE`] if it is one
/// of ours (64 hex digits), else a new random one. Keeping it means a second load of the login
/// page (another tab, or the browser following a redirect for /favicon.ico) does not make the
/// form already shown fail its check. It is no weaker: whoever can set that cookie can set it
/// to a value they know either way.
pub fn login_token(held: Option<&str>) -> Option<String> {
    match held {
        Some(t) if t.len() == 64 && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Some(t.to_owned())
        }
        _ => super::sessions::random_token(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_token_is_kept_only_if_it_is_ours() {
        let ours = "0123456789abcdef".repeat(4);
        assert_eq!(login_token(Some(&ours)).as_deref(), Some(ours.as_str()));
        for bad in ["", "abc", &"0123456789ABCDEF".repeat(4), &"g".repeat(64), &"a".repeat(65)] {
            let fresh = login_token(Some(bad)).unwrap();
            assert!(fresh != bad && fresh.len() == 64, "{bad:?} is replaced");
        }
        assert_ne!(login_token(None), login_token(None), "fresh tokens are random");
    }

    #[test]
    fn only_the_exact_token_passes() {
        assert!(matches("abcd", Some("abcd")));
        assert!(!matches("abcd", Some("abce")));
        assert!(!matches("abcd", Some("abc")));
        assert!(!matches("abcd", None));
        assert!(!matches("", Some("")), "an empty expected token never matches");
    }
}
