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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        assert!(matches("abcd", Some("abcd")));
        assert!(!matches("abcd", Some("abce")));
        assert!(!matches("abcd", Some("abc")));
        assert!(!matches("abcd", None));
        assert!(!matches("", Some("")), "an empty expected token never matches");
    }
}
