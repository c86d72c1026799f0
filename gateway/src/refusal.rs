//! Why a gateway refused a peer's certificate, as told across a closing QUIC connection.
//!
//! A refusal reaches the refused side in one of two ways. If rustls's verifier refuses the
//! certificate during the handshake, the connection closes with a TLS alert (QUIC crypto error
//! `0x100 + alert`); the certs crate picks the alert per reason. If the refusal comes after the
//! handshake (a resumed TLS session skips the verifier, a CRL reload re-checks live connections),
//! the gateway closes with one of the application codes below and a reason phrase. Both map back
//! to the same [`Refusal`], so the refused consumer's error says which, in our words rather than
//! the peer's. Pure: codes in, reasons out.

use fedgate_certs::PeerError;

/// Application close code base for certificate refusals (see docs/protocol.md).
const BASE: u32 = 0x40;

/// TLS 1.3 alert numbers (RFC 8446 §6) the certs crate's verifier produces.
mod alert {
    pub(super) const BAD_CERTIFICATE: u8 = 42;
    pub(super) const UNSUPPORTED_CERTIFICATE: u8 = 43;
    pub(super) const CERTIFICATE_REVOKED: u8 = 44;
    pub(super) const CERTIFICATE_EXPIRED: u8 = 45;
    pub(super) const CERTIFICATE_UNKNOWN: u8 = 46;
    pub(super) const UNKNOWN_CA: u8 = 48;
    pub(super) const ACCESS_DENIED: u8 = 49;
    pub(super) const CERTIFICATE_REQUIRED: u8 = 116;
}

/// QUIC transport error codes `0x100..=0x1ff` carry a TLS alert in the low byte.
const CRYPTO_ERROR_BASE: u64 = 0x100;

/// Why a certificate was refused, in the refused side's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// On a revocation list.
    Revoked,
    /// Past its notAfter.
    Expired,
    /// Before its notBefore.
    NotYetValid,
    /// Expired or not yet valid (TLS has one alert for both).
    OutsideValidity,
    /// Not issued under the federation's root (or self-signed).
    UnknownIssuer,
    /// Its issuing CA may not issue for the node's region.
    OutOfRegion,
    /// Lacks the extended key usage for its role.
    WrongUsage,
    /// Carries no valid node id.
    NoIdentity,
    /// No certificate was presented.
    Missing,
    /// Refused for another reason.
    Other,
}

const ALL: [Refusal; 10] = [
    Refusal::Revoked,
    Refusal::Expired,
    Refusal::NotYetValid,
    Refusal::OutsideValidity,
    Refusal::UnknownIssuer,
    Refusal::OutOfRegion,
    Refusal::WrongUsage,
    Refusal::NoIdentity,
    Refusal::Missing,
    Refusal::Other,
];

impl Refusal {
    /// The refusal a verification failure is told as.
    pub fn of(e: &PeerError) -> Refusal {
        match e {
            PeerError::Revoked => Refusal::Revoked,
            PeerError::Expired => Refusal::Expired,
            PeerError::NotYetValid => Refusal::NotYetValid,
            PeerError::UnknownCa(_) | PeerError::SelfSigned(_) => Refusal::UnknownIssuer,
            PeerError::RegionNotCovered { .. } => Refusal::OutOfRegion,
            PeerError::WrongUsage(_) => Refusal::WrongUsage,
            PeerError::NoIdentity(_) => Refusal::NoIdentity,
            _ => Refusal::Other,
        }
    }

    /// The QUIC application close code for this refusal.
    pub fn close_code(self) -> u32 {
        BASE + ALL.iter().position(|r| *r == self).unwrap_or(ALL.len() - 1) as u32
    }

    /// The refusal an application close code stands for, if it is one of ours.
    pub fn from_close_code(code: u64) -> Option<Refusal> {
        let i = code.checked_sub(u64::from(BASE))?;
        ALL.get(usize::try_from(i).ok()?).copied()
    }

    /// The refusal a TLS alert stands for. `reason` is the peer's close text; TLS has one alert
    /// for expired and not yet valid, and the text tells them apart when it can.
    pub fn from_alert(alert: u8, reason: &str) -> Option<Refusal> {
        Some(match alert {
            alert::CERTIFICATE_REVOKED => Refusal::Revoked,
            alert::CERTIFICATE_EXPIRED
                if reason.contains("NotValidYet") || reason.contains("not valid yet") =>
            {
                Refusal::NotYetValid
            }
            alert::CERTIFICATE_EXPIRED if reason.contains("xpired") => Refusal::Expired,
            alert::CERTIFICATE_EXPIRED => Refusal::OutsideValidity,
            alert::UNKNOWN_CA => Refusal::UnknownIssuer,
            alert::ACCESS_DENIED => Refusal::OutOfRegion,
            alert::UNSUPPORTED_CERTIFICATE => Refusal::WrongUsage,
            alert::BAD_CERTIFICATE => Refusal::NoIdentity,
            alert::CERTIFICATE_REQUIRED => Refusal::Missing,
            alert::CERTIFICATE_UNKNOWN => Refusal::Other,
            _ => return None,
        })
    }

    /// The refusal a closed connection carries, if it was closed over our certificate.
    pub fn from_connection_error(e: &quinn::ConnectionError) -> Option<Refusal> {
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => {
                Refusal::from_close_code(c.error_code.into_inner())
            }
            quinn::ConnectionError::ConnectionClosed(c) => {
                let code = u64::from(c.error_code);
                let alert = code.checked_sub(CRYPTO_ERROR_BASE).filter(|a| *a <= 0xff)?;
                Refusal::from_alert(alert as u8, &String::from_utf8_lossy(&c.reason))
            }
            _ => None,
        }
    }

    /// What the refused side is told, about its own certificate.
    pub fn phrase(self) -> &'static str {
        match self {
            Refusal::Revoked => "our certificate is revoked",
            Refusal::Expired => "our certificate has expired",
            Refusal::NotYetValid => "our certificate is not valid yet",
            Refusal::OutsideValidity => "our certificate has expired or is not valid yet",
            Refusal::UnknownIssuer => {
                "our certificate is not issued under their federation root (unknown issuer)"
            }
            Refusal::OutOfRegion => "our certificate's issuing CA may not issue for our region",
            Refusal::WrongUsage => "our certificate lacks the extended key usage for this role",
            Refusal::NoIdentity => "our certificate carries no valid fedgate node id",
            Refusal::Missing => "we presented no certificate",
            Refusal::Other => "our certificate was not accepted",
        }
    }

    /// Short name for logs and audit entries (`revoked`, `out-of-region`, …).
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not-yet-valid",
            Refusal::OutsideValidity => "outside-validity",
            Refusal::UnknownIssuer => "unknown-issuer",
            Refusal::OutOfRegion => "out-of-region",
            Refusal::WrongUsage => "wrong-usage",
            Refusal::NoIdentity => "no-identity",
            Refusal::Missing => "no-certificate",
            Refusal::Other => "refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedgate_certs::Role;

    #[test]
    fn close_codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in ALL {
            assert!(seen.insert(r.close_code()), "{r:?} shares a code");
            assert_eq!(Refusal::from_close_code(u64::from(r.close_code())), Some(r));
        }
        // The values docs/protocol.md documents.
        assert_eq!(Refusal::Revoked.close_code(), 0x40);
        assert_eq!(Refusal::Other.close_code(), 0x49);
        assert_eq!(Refusal::from_close_code(0), None);
        assert_eq!(Refusal::from_close_code(0x3f), None);
        assert_eq!(Refusal::from_close_code(u64::from(BASE) + ALL.len() as u64), None);
        assert_eq!(Refusal::from_close_code(u64::MAX), None);
    }

    #[test]
    fn peer_errors_map_to_the_reason_the_consumer_is_told() {
        let region = PeerError::RegionNotCovered {
            issuer: "CA".into(),
            issuer_region: "wuxi.xinwu".into(),
            subject: "police@wuxi.liangxi".into(),
        };
        let cases = [
            (PeerError::Revoked, Refusal::Revoked),
            (PeerError::Expired, Refusal::Expired),
            (PeerError::NotYetValid, Refusal::NotYetValid),
            (PeerError::UnknownCa("x".into()), Refusal::UnknownIssuer),
            (PeerError::SelfSigned("x".into()), Refusal::UnknownIssuer),
            (region, Refusal::OutOfRegion),
            (PeerError::WrongUsage(Role::Client), Refusal::WrongUsage),
            (PeerError::NoIdentity("x".into()), Refusal::NoIdentity),
            (PeerError::Invalid("x".into()), Refusal::Other),
        ];
        for (e, want) in cases {
            assert_eq!(Refusal::of(&e), want, "{e}");
        }
    }

    #[test]
    fn alerts_map_to_reasons() {
        assert_eq!(Refusal::from_alert(44, ""), Some(Refusal::Revoked));
        assert_eq!(Refusal::from_alert(45, "invalid peer certificate: Expired"), Some(Refusal::Expired));
        assert_eq!(
            Refusal::from_alert(45, "invalid peer certificate: NotValidYet"),
            Some(Refusal::NotYetValid)
        );
        assert_eq!(Refusal::from_alert(45, ""), Some(Refusal::OutsideValidity));
        assert_eq!(Refusal::from_alert(48, ""), Some(Refusal::UnknownIssuer));
        assert_eq!(Refusal::from_alert(49, ""), Some(Refusal::OutOfRegion));
        assert_eq!(Refusal::from_alert(43, ""), Some(Refusal::WrongUsage));
        assert_eq!(Refusal::from_alert(116, ""), Some(Refusal::Missing));
        // handshake_failure and the like are not about our certificate.
        assert_eq!(Refusal::from_alert(40, ""), None);
        assert_eq!(Refusal::from_alert(80, ""), None);
    }
}
