use std::net::SocketAddr;

use fedgate_catalog::{NodeId, Region};
use time::{Duration, OffsetDateTime};

use super::*;
use crate::authority::{Authority, CA_DAYS, ROOT_DAYS};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn region(s: &str) -> Region {
    s.parse().unwrap()
}

fn entry(node: &str, port: u16) -> Entry {
    Entry {
        node: node.parse().unwrap(),
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        fingerprint: None,
    }
}

struct Pki {
    root: Authority,
    liangxi: Authority,
}

fn pki() -> Pki {
    let root = Authority::new_root(&region("wuxi"), now(), ROOT_DAYS).unwrap();
    let liangxi = root.issue_ca(&region("wuxi.liangxi"), now(), CA_DAYS).unwrap();
    Pki { root, liangxi }
}

fn city(version: u64) -> Directory {
    let nodes = vec![
        entry("hotline12345@wuxi", 7001),
        entry("grid@wuxi", 7002),
        entry("grid@wuxi.liangxi", 7003),
        entry("police@wuxi.liangxi", 7004),
    ];
    Directory::new(region("wuxi"), region("wuxi"), version, 1_700_000_000, nodes).unwrap()
}

fn liangxi(version: u64) -> Directory {
    let nodes = vec![entry("grid@wuxi.liangxi.chongan", 7101), entry("police@wuxi.liangxi", 7104)];
    Directory::new(region("wuxi"), region("wuxi.liangxi"), version, 1_700_000_000, nodes).unwrap()
}

#[test]
fn signed_by_the_root_verifies_and_round_trips_through_a_bundle() {
    let p = pki();
    let signed = sign(&city(3), &p.root).unwrap();
    let bundle = Bundle { docs: vec![signed] };
    let back = Bundle::decode(&bundle.encode()).unwrap();
    assert_eq!(back, bundle);
    let view = View::verify(&back, p.root.root(), &Revocations::default(), now()).unwrap();
    assert_eq!(view.summary(), vec![("wuxi".to_owned(), 3)]);
    assert_eq!(view.entry(&"grid@wuxi".parse().unwrap()).unwrap().address.port(), 7002);
}

#[test]
fn a_region_ca_signs_its_own_subtree() {
    let p = pki();
    let v = verify(&sign(&liangxi(1), &p.liangxi).unwrap(), p.root.root(), &Revocations::default(), now())
        .unwrap();
    assert!(v.signer().contains("wuxi.liangxi"), "{}", v.signer());
}

#[test]
fn a_region_ca_may_not_sign_outside_its_region() {
    let p = pki();
    let err = sign(&city(1), &p.liangxi).unwrap_err();
    assert!(matches!(err, DirectoryError::SignerOutsideRegion { .. }), "{err}");
    // Signed anyway (by hand, as a rogue tool would): the verifier refuses it too.
    let body = city(1).encode();
    let signature = p.liangxi.sign_message(&[b"fedgate directory v1\0".as_slice(), &body].concat()).unwrap();
    let rogue = Signed { body, chain: p.liangxi.chain(), signature };
    let err = verify(&rogue, p.root.root(), &Revocations::default(), now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "directory wuxi v1: signed by the CA of region wuxi.liangxi, which may not sign for scope wuxi"
    );
}

#[test]
fn a_directory_cannot_list_a_node_outside_its_scope() {
    let nodes = vec![entry("police@wuxi.liangxi", 1), entry("court@wuxi.xinwu", 2)];
    let err = Directory::new(region("wuxi"), region("wuxi.liangxi"), 1, 0, nodes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "directory wuxi.liangxi v1: node court@wuxi.xinwu lies outside the scope wuxi.liangxi of this directory"
    );
    let err = Directory::new(region("wuxi"), region("suzhou"), 1, 0, vec![]).unwrap_err();
    assert!(matches!(err, DirectoryError::ScopeOutsideFederation { .. }), "{err}");
}

#[test]
fn a_bad_signature_or_an_altered_body_is_refused() {
    let p = pki();
    let signed = sign(&city(2), &p.root).unwrap();
    let mut sig = signed.signature().to_vec();
    sig[10] ^= 1;
    let err = verify(&signed.with_signature(sig), p.root.root(), &Revocations::default(), now()).unwrap_err();
    assert!(matches!(err, DirectoryError::BadSignature { .. }), "{err}");
    let err = verify(&signed.with_body(city(9).encode()), p.root.root(), &Revocations::default(), now())
        .unwrap_err();
    assert!(err.to_string().starts_with("directory wuxi v9: signature does not verify"), "{err}");
}

#[test]
fn a_foreign_root_or_a_foreign_region_ca_is_refused() {
    let p = pki();
    let other = pki();
    let err = verify(&sign(&city(1), &other.root).unwrap(), p.root.root(), &Revocations::default(), now())
        .unwrap_err();
    assert!(matches!(err, DirectoryError::BadSignature { .. }), "{err}");
    // Same names as ours, other keys: the chain does not lead to our root.
    let err =
        verify(&sign(&liangxi(1), &other.liangxi).unwrap(), p.root.root(), &Revocations::default(), now())
            .unwrap_err();
    assert!(matches!(err, DirectoryError::UnknownSigner { .. }), "{err}");
    assert!(err.to_string().contains("does not verify with the key of"), "{err}");
    // Another federation's root altogether.
    let suzhou = Authority::new_root(&region("suzhou"), now(), ROOT_DAYS).unwrap();
    let err =
        verify(&sign(&city(1), &p.root).unwrap(), suzhou.root(), &Revocations::default(), now()).unwrap_err();
    assert!(matches!(err, DirectoryError::WrongFederation { .. }), "{err}");
}

#[test]
fn an_expired_signer_is_refused() {
    let p = pki();
    let signed = sign(&liangxi(1), &p.liangxi).unwrap();
    let later = now() + Duration::days(i64::from(CA_DAYS) + 2);
    let err = verify(&signed, p.root.root(), &Revocations::default(), later).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn an_older_version_is_refused_and_the_current_kept() {
    let p = pki();
    let view = |d: Directory, ca: &Authority| {
        View::verify(
            &Bundle { docs: vec![sign(&d, ca).unwrap()] },
            p.root.root(),
            &Revocations::default(),
            now(),
        )
        .unwrap()
    };
    let v5 = view(city(5), &p.root);
    let m = v5.merge(&view(city(4), &p.root));
    assert_eq!(m.view, v5);
    assert!(m.accepted.is_empty());
    assert_eq!(
        m.refused[0].to_string(),
        "directory wuxi v4: older than version 5 already held for scope wuxi; kept the current one"
    );
    // Same version, other contents: refused as a conflict.
    let mut other = city(5);
    other.issued += 1;
    let m = v5.merge(&view(other, &p.root));
    assert!(matches!(m.refused[0], DirectoryError::Conflict { .. }), "{:?}", m.refused);
    // Same directory again: nothing to do.
    let m = v5.merge(&v5);
    assert!(m.accepted.is_empty() && m.refused.is_empty());
    // Newer, and a scope not held yet: both taken.
    let mut both = view(city(6), &p.root);
    both = both.merge(&view(liangxi(1), &p.liangxi)).view;
    let m = v5.merge(&both);
    assert_eq!(m.accepted, vec!["wuxi v6".to_owned(), "wuxi.liangxi v1".to_owned()]);
    assert!(v5.newer_than(&[]) && !v5.newer_than(&[("wuxi".into(), 5)]) && both.newer_than(&v5.summary()));
    assert!(v5.behind(&both.summary()) && !both.behind(&v5.summary()) && !v5.behind(&[("wuxi".into(), 5)]));
    assert!(v5.behind(&[("wuxi.xinwu".into(), 1)]));
}

#[test]
fn duplicate_nodes_and_bad_addresses_are_refused() {
    let err = Directory::new(
        region("wuxi"),
        region("wuxi"),
        1,
        0,
        vec![entry("grid@wuxi", 1), entry("grid@wuxi", 2)],
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "directory wuxi v1: node grid@wuxi is listed twice");
    let err = Directory::new(region("wuxi"), region("wuxi"), 1, 0, vec![entry("grid@wuxi", 0)]).unwrap_err();
    assert!(err.to_string().contains("node grid@wuxi: bad address \"127.0.0.1:0\""), "{err}");
    let mut e = entry("grid@wuxi", 7);
    e.address = "0.0.0.0:7400".parse().unwrap();
    let err = Directory::new(region("wuxi"), region("wuxi"), 1, 0, vec![e]).unwrap_err();
    assert!(matches!(err, DirectoryError::BadAddress { .. }), "{err}");
    assert!(matches!(
        Directory::new(region("wuxi"), region("wuxi"), 0, 0, vec![]),
        Err(DirectoryError::ZeroVersion(_))
    ));
}

/// A body written by hand, bypassing `Directory::new`'s checks, as a forger would.
fn raw_body(nodes: &[(&str, &str)]) -> Vec<u8> {
    use ciborium::Value;
    let text = |s: &str| Value::Text(s.into());
    let entries = nodes
        .iter()
        .map(|(n, a)| Value::Map(vec![(text("node"), text(n)), (text("address"), text(a))]))
        .collect();
    let body = Value::Map(vec![
        (text("format"), Value::Integer(1.into())),
        (text("federation"), text("wuxi")),
        (text("scope"), text("wuxi")),
        (text("version"), Value::Integer(1.into())),
        (text("issued"), Value::Integer(0.into())),
        (text("nodes"), Value::Array(entries)),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&body, &mut out).unwrap();
    out
}

#[test]
fn decoding_names_the_bad_entry_and_refuses_non_canonical_bytes() {
    let ok = raw_body(&[("a@wuxi", "127.0.0.1:1"), ("b@wuxi", "127.0.0.1:2")]);
    assert_eq!(Directory::decode(&ok).unwrap().nodes().len(), 2);
    let dup = raw_body(&[("a@wuxi", "127.0.0.1:1"), ("a@wuxi", "127.0.0.1:2")]);
    assert!(matches!(Directory::decode(&dup), Err(DirectoryError::DuplicateNode { .. })));
    let addr = raw_body(&[("a@wuxi", "somewhere")]);
    assert_eq!(
        Directory::decode(&addr).unwrap_err().to_string(),
        "directory wuxi v1: node a@wuxi: bad address \"somewhere\": not IP:PORT"
    );
    let id = raw_body(&[("Not An Id", "127.0.0.1:1")]);
    assert!(Directory::decode(&id).unwrap_err().to_string().starts_with("directory wuxi v1: entry 0:"));
    let unsorted = raw_body(&[("b@wuxi", "127.0.0.1:2"), ("a@wuxi", "127.0.0.1:1")]);
    assert!(matches!(Directory::decode(&unsorted), Err(DirectoryError::NotCanonical(_))));
}

#[test]
fn every_truncation_of_a_bundle_fails_to_decode() {
    let p = pki();
    let bytes = Bundle { docs: vec![sign(&city(1), &p.root).unwrap()] }.encode();
    for n in 0..bytes.len() {
        assert!(Bundle::decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(Bundle::decode(&long).is_err());
}

#[test]
fn a_bundle_with_two_directories_for_one_scope_is_refused() {
    let p = pki();
    let bundle = Bundle { docs: vec![sign(&city(1), &p.root).unwrap(), sign(&city(2), &p.root).unwrap()] };
    let err = View::verify(&bundle, p.root.root(), &Revocations::default(), now()).unwrap_err();
    assert_eq!(err, DirectoryError::DuplicateScope("wuxi".into()));
}

#[test]
fn the_narrower_scope_wins_in_the_combined_view() {
    let p = pki();
    let bundle =
        Bundle { docs: vec![sign(&liangxi(1), &p.liangxi).unwrap(), sign(&city(1), &p.root).unwrap()] };
    let view = View::verify(&bundle, p.root.root(), &Revocations::default(), now()).unwrap();
    let police: NodeId = "police@wuxi.liangxi".parse().unwrap();
    assert_eq!(view.entry(&police).unwrap().address.port(), 7104);
    assert_eq!(view.entries().len(), 5);
    assert_eq!(view.summary(), vec![("wuxi".to_owned(), 1), ("wuxi.liangxi".to_owned(), 1)]);
}

#[test]
fn resolve_walks_up_to_the_nearest_node_of_the_department() {
    let p = pki();
    let bundle =
        Bundle { docs: vec![sign(&liangxi(1), &p.liangxi).unwrap(), sign(&city(1), &p.root).unwrap()] };
    let view = View::verify(&bundle, p.root.root(), &Revocations::default(), now()).unwrap();
    let who = |d: &str, r: &str| view.resolve(d, &region(r)).map(|e| e.node.to_string());
    // The street's own office.
    assert_eq!(who("grid", "wuxi.liangxi.chongan.guangrui").as_deref(), Some("grid@wuxi.liangxi.chongan"));
    assert_eq!(who("grid", "wuxi.liangxi.chongan").as_deref(), Some("grid@wuxi.liangxi.chongan"));
    // Another street of the district: the district's office.
    assert_eq!(who("grid", "wuxi.liangxi.qingming").as_deref(), Some("grid@wuxi.liangxi"));
    // Another district: the city's.
    assert_eq!(who("grid", "wuxi.xinwu.meicun").as_deref(), Some("grid@wuxi"));
    // A department with no node on the path.
    assert_eq!(who("police", "wuxi.xinwu"), None);
    assert_eq!(who("court", "wuxi.liangxi"), None);
}

#[test]
fn sources_parse_with_located_errors() {
    let text = "federation = \"wuxi\"\nversion = 2\n\n[[nodes]]\nnode = \"hotline@wuxi\"\naddress = \"127.0.0.1:7400\"\nfingerprint = \"AB:CD\"\n\n[[nodes]]\nnode = \"police@wuxi.liangxi\"\naddress = \"nowhere\"\n\n[[nodes]]\nnode = \"grid@wuxi\"\naddress = \"127.0.0.1:7401\"\n\n[[nodes]]\nnode = \"grid@wuxi\"\naddress = \"127.0.0.1:7402\"\n";
    let err = parse_source("dir.toml", text, None, 0).unwrap_err().to_string();
    assert!(err.contains("dir.toml:7:15: `fingerprint` must be 32 bytes of hex"), "{err}");
    assert!(err.contains("dir.toml:11:11: `address` must be IP:PORT"), "{err}");
    assert!(err.contains("dir.toml:18:1: node grid@wuxi is listed twice"), "{err}");
    let good = "federation = \"wuxi\"\nscope = \"wuxi.liangxi\"\nversion = 2\n[[nodes]]\nnode = \"police@wuxi.liangxi\"\naddress = \"127.0.0.1:7400\"\n";
    let d = parse_source("dir.toml", good, Some(9), 5).unwrap();
    assert_eq!((d.version, d.scope.as_str(), d.issued, d.nodes().len()), (9, "wuxi.liangxi", 5, 1));
    let outside = good.replace("police@wuxi.liangxi", "court@wuxi.xinwu");
    let err = parse_source("dir.toml", &outside, None, 0).unwrap_err().to_string();
    assert!(err.contains("dir.toml:5:1: node court@wuxi.xinwu lies outside the scope wuxi.liangxi"), "{err}");
}

#[test]
fn a_region_ca_revoked_by_its_issuer_signs_no_directory_and_loses_the_ones_held() {
    let p = pki();
    let signed = sign(&liangxi(1), &p.liangxi).unwrap();
    let bundle = Bundle { docs: vec![sign(&city(1), &p.root).unwrap(), signed.clone()] };
    let held = View::verify(&bundle, p.root.root(), &Revocations::default(), now()).unwrap();
    // An empty CRL of the root, or the root's CRL revoking someone else, changes nothing.
    let empty = Revocations::parse(&[p.root.empty_crl(now()).unwrap()]).unwrap();
    assert!(verify(&signed, p.root.root(), &empty, now()).is_ok());
    let xinwu = p.root.issue_ca(&region("wuxi.xinwu"), now(), CA_DAYS).unwrap();
    let other = Revocations::parse(&[p.root.revoke(None, xinwu.cert(), now()).unwrap()]).unwrap();
    assert!(verify(&signed, p.root.root(), &other, now()).is_ok());
    // The root revokes the Liangxi CA: its directory no longer verifies, the root's still does.
    let crl = p.root.revoke(None, p.liangxi.cert(), now()).unwrap();
    let revoked = Revocations::parse(&[crl]).unwrap();
    let err = verify(&signed, p.root.root(), &revoked, now()).unwrap_err();
    assert!(matches!(err, DirectoryError::Revoked { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("directory wuxi.liangxi v1: signed under ") && text.contains("has revoked"),
        "{text}"
    );
    assert!(
        View::verify(&bundle, p.root.root(), &revoked, now()).is_err(),
        "a bundle is used whole or not at all"
    );
    let (kept, dropped) = held.reverify(p.root.root(), &revoked, now());
    assert_eq!(kept.summary(), vec![("wuxi".to_owned(), 1)]);
    assert_eq!(dropped.len(), 1);
    assert!(matches!(dropped[0], DirectoryError::Revoked { .. }));
}

#[test]
fn a_revocation_list_counts_only_when_signed_by_the_issuer_it_names() {
    let p = pki();
    let signed = sign(&liangxi(1), &p.liangxi).unwrap();
    // Another federation's root of the same name lists our Liangxi CA: same issuer DN, same
    // serial, but the list's signature does not verify with our root's key.
    let forger = Authority::new_root(&region("wuxi"), now(), ROOT_DAYS).unwrap();
    let forged = forger.revoke(None, p.liangxi.cert(), now()).expect("same issuer name");
    let forged = Revocations::parse(&[forged]).unwrap();
    assert!(verify(&signed, p.root.root(), &forged, now()).is_ok(), "a forged list revokes nothing");
    let genuine = Revocations::parse(&[p.root.revoke(None, p.liangxi.cert(), now()).unwrap()]).unwrap();
    assert!(verify(&signed, p.root.root(), &genuine, now()).is_err(), "the same entry, signed by our root");
    let junk = rustls_pki_types::CertificateRevocationListDer::from(vec![1, 2, 3]);
    assert!(Revocations::parse(&[junk]).unwrap_err().starts_with("revocation list #1: "));
}

#[test]
fn a_directory_of_a_thousand_nodes_round_trips_and_verifies() {
    // Bodies past 4 KiB (about 60 nodes) once failed to decode: found by fedgate-scale at 200.
    let p = pki();
    let nodes = (0..1000).map(|i| entry(&format!("dept-{i:04}@wuxi"), 10_000 + i as u16)).collect();
    let dir = Directory::new(region("wuxi"), region("wuxi"), 1, 1_700_000_000, nodes).unwrap();
    let bundle = Bundle { docs: vec![sign(&dir, &p.root).unwrap()] };
    let bytes = bundle.encode();
    assert!(bytes.len() > 40_000, "{} bytes", bytes.len());
    let back = Bundle::decode(&bytes).unwrap();
    let view = View::verify(&back, p.root.root(), &Revocations::default(), now()).unwrap();
    assert_eq!(view.entries().len(), 1000);
    assert_eq!(view.entry(&"dept-0999@wuxi".parse().unwrap()).unwrap().address.port(), 10_999);
}
