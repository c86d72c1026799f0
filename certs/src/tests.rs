//! Issue-then-verify tests over real certificates, with a fixed clock.

use rustls_pki_types::UnixTime;
use time::{Duration, OffsetDateTime};

use crate::authority::{danger, Authority, IssueError, IssuedNode, NodeProfile, Usage};
use crate::verify::{PeerError, Role, TrustStore};
use crate::{NodeId, Region};

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn unix(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.unix_timestamp() as u64))
}

fn region(s: &str) -> Region {
    s.parse().unwrap()
}

fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

struct Fed {
    root: Authority,
    liangxi: Authority,
}

fn fed() -> Fed {
    let root = Authority::new_root(&region("wuxi"), now(), 3650).unwrap();
    let liangxi = root.issue_ca(&region("wuxi.liangxi"), now(), 1000).unwrap();
    Fed { root, liangxi }
}

fn verify(trust: &TrustStore, n: &IssuedNode, role: Role, at: OffsetDateTime) -> Result<NodeId, PeerError> {
    trust.verify(&n.chain[0], &n.chain[1..], role, unix(at)).map(|p| p.node().clone())
}

fn trust(f: &Fed) -> TrustStore {
    TrustStore::new(f.root.root().clone(), &[]).unwrap()
}

#[test]
fn nodes_verify_in_both_roles_under_root_and_intermediate() {
    let f = fed();
    let t = trust(&f);
    let a = f.root.issue_node(&node("petition@wuxi"), NodeProfile::gateway(now(), 30)).unwrap();
    let b =
        f.liangxi.issue_node(&node("grid@wuxi.liangxi.chongan"), NodeProfile::gateway(now(), 30)).unwrap();
    assert_eq!(b.chain.len(), 2);
    for role in [Role::Client, Role::Server] {
        assert_eq!(verify(&t, &a, role, now()).unwrap(), node("petition@wuxi"));
        assert_eq!(verify(&t, &b, role, now()).unwrap(), node("grid@wuxi.liangxi.chongan"));
    }
}

#[test]
fn intermediate_refuses_outside_its_region() {
    let f = fed();
    for bad in ["police@wuxi", "police@wuxi.xinwu"] {
        let err = f.liangxi.issue_node(&node(bad), NodeProfile::gateway(now(), 30)).err().unwrap();
        assert!(matches!(err, IssueError::OutsideRegion { .. }), "{bad}: {err}");
    }
    assert!(f.liangxi.issue_ca(&region("wuxi.xinwu"), now(), 10).is_err());
    assert!(f.root.issue_ca(&region("suzhou"), now(), 10).is_err());
}

#[test]
fn verifier_catches_an_issuer_overstepping_its_region() {
    let f = fed();
    let rogue =
        danger::issue_node_unchecked(&f.liangxi, &node("court@wuxi.xinwu"), NodeProfile::gateway(now(), 30))
            .unwrap();
    let err = verify(&trust(&f), &rogue, Role::Client, now()).unwrap_err();
    assert!(matches!(err, PeerError::RegionNotCovered { .. }), "{err}");
    assert!(err.to_string().contains("wuxi.liangxi"), "{err}");
}

#[test]
fn validity_window_is_enforced() {
    let f = fed();
    let n = f.liangxi.issue_node(&node("police@wuxi.liangxi"), NodeProfile::gateway(now(), 30)).unwrap();
    let t = trust(&f);
    assert_eq!(verify(&t, &n, Role::Client, now() + Duration::days(31)), Err(PeerError::Expired));
    assert_eq!(verify(&t, &n, Role::Client, now() - Duration::days(1)), Err(PeerError::NotYetValid));
}

#[test]
fn usage_self_signed_and_foreign_roots_are_refused() {
    let f = fed();
    let t = trust(&f);
    let mut p = NodeProfile::gateway(now(), 30);
    p.usage = Usage::ServerOnly;
    let server_only = f.liangxi.issue_node(&node("police@wuxi.liangxi"), p).unwrap();
    assert!(verify(&t, &server_only, Role::Server, now()).is_ok());
    assert_eq!(verify(&t, &server_only, Role::Client, now()), Err(PeerError::WrongUsage(Role::Client)));

    let selfie = danger::self_signed_node(&node("police@wuxi.liangxi"), now()).unwrap();
    assert!(matches!(verify(&t, &selfie, Role::Client, now()), Err(PeerError::SelfSigned(_))));

    let other = Authority::new_root(&region("wuxi"), now(), 100).unwrap();
    let stranger = other.issue_node(&node("police@wuxi.liangxi"), NodeProfile::gateway(now(), 30)).unwrap();
    assert!(matches!(verify(&t, &stranger, Role::Client, now()), Err(PeerError::UnknownCa(_))));
}

#[test]
fn revocation_applies_to_leaves_and_intermediates() {
    let f = fed();
    let n = f.liangxi.issue_node(&node("police@wuxi.liangxi"), NodeProfile::gateway(now(), 30)).unwrap();
    let other =
        f.liangxi.issue_node(&node("grid@wuxi.liangxi.chongan"), NodeProfile::gateway(now(), 30)).unwrap();
    let crl = f.liangxi.revoke(None, &n.chain[0], now()).unwrap();
    // Revoking twice is idempotent and keeps earlier entries.
    let crl = f.liangxi.revoke(Some(&crl), &n.chain[0], now()).unwrap();
    let t = trust(&f).with_crls(&[crl]).unwrap();
    assert_eq!(verify(&t, &n, Role::Client, now()), Err(PeerError::Revoked));
    assert!(verify(&t, &other, Role::Client, now()).is_ok());

    let root_crl = f.root.revoke(None, f.liangxi.cert(), now()).unwrap();
    let t = trust(&f).with_crls(&[root_crl]).unwrap();
    assert_eq!(verify(&t, &other, Role::Client, now()), Err(PeerError::Revoked));

    let err = f.root.revoke(None, &n.chain[0], now()).err().unwrap();
    assert!(matches!(err, IssueError::NotOurs { .. }), "{err}");
}
