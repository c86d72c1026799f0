//! The mutual-TLS QUIC link between real gateways on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use fedgate_certs::authority::{danger, Authority, IssuedNode, NodeProfile, Usage};
use fedgate_certs::tls::{FederationVerifier, TlsBuilder};
use fedgate_certs::{PeerError, Role, TrustStore};
use fedgate_gateway::link::{self, Link, LinkError};
use fedgate_gateway::node::RunningNode;
use fedgate_gateway::refusal::Refusal;
use fedgate_gateway::wire::{ErrorCode, Message};
use time::Duration as TDuration;

/// A bare link (no config checks) presenting `issued`, trusting the federation root.
fn bare_link(fed: &Federation, node: &str, issued: &IssuedNode) -> Link {
    let trust = TrustStore::new(fed.root.root().clone(), &[]).unwrap();
    Link::bind(
        id(node),
        "127.0.0.1:0".parse().unwrap(),
        FederationVerifier::new(trust),
        issued.chain.clone(),
        key_of(issued),
    )
    .unwrap()
}

async fn dial(from: &Link, to: &RunningNode) -> Result<fedgate_gateway::link::PeerConnection, LinkError> {
    from.connection(&to.config().node, to.quic_addr().unwrap()).await
}

#[tokio::test]
async fn gateways_authenticate_each_other_both_ways() {
    let fed = Federation::new();
    let a = fed.start("police@wuxi.liangxi").await;
    let b = fed.start("court@wuxi.xinwu").await;
    let ab = a.link().connection(&b.config().node, b.quic_addr().unwrap()).await.unwrap();
    assert_eq!(ab.peer.node(), &id("court@wuxi.xinwu"));
    let ba = b.link().connection(&a.config().node, a.quic_addr().unwrap()).await.unwrap();
    assert_eq!(ba.peer.node(), &id("police@wuxi.liangxi"));
    // The cached connection is reused.
    let again = a.link().connection(&b.config().node, b.quic_addr().unwrap()).await.unwrap();
    assert_eq!(again.conn.stable_id(), ab.conn.stable_id());
    a.shutdown().await;
    b.shutdown().await;
}

/// A gateway that is stopping blames itself, not the peer: neither a new dial nor a stream on a
/// connection it already closed reads as the peer being unavailable.
#[tokio::test]
async fn a_stopping_gateway_says_so_instead_of_blaming_the_peer() {
    let fed = Federation::new();
    let a = fed.start("police@wuxi.liangxi").await;
    let b = fed.start("court@wuxi.xinwu").await;
    let ab = dial(a.link(), &b).await.unwrap();
    a.link().shutdown().await;
    let Err(err) = dial(a.link(), &b).await else { panic!("a stopped link dials no one") };
    assert!(matches!(&err, LinkError::Stopping { .. }), "{err:?}");
    assert_eq!(fedgate_gateway::error::ApiCode::from(&err).as_str(), "shutting-down");
    let Err(err) = ab.conn.open_bi().await else { panic!("the connection was closed by our own shutdown") };
    let err = link::lost("court@wuxi.xinwu", err);
    assert!(matches!(&err, LinkError::Stopping { .. }), "{err:?}");
    assert_eq!(fedgate_gateway::error::ApiCode::from(&err).status().as_u16(), 503);
    b.shutdown().await;
}

type Expect = fn(&PeerError) -> bool;

/// Each bad client certificate is refused by the server, which records why, and the client
/// learns promptly that it cannot talk.
#[tokio::test]
async fn bad_client_certificates_are_rejected_with_reasons() {
    let fed = Federation::new();
    let server = fed.start("petition@wuxi").await;
    let seen = record_rejections(&server);
    let now = now();
    let police = id("police@wuxi.liangxi");

    let expired = NodeProfile {
        not_before: now - TDuration::days(10),
        not_after: now - TDuration::days(1),
        usage: Usage::Gateway,
    };
    let future = NodeProfile {
        not_before: now + TDuration::days(1),
        not_after: now + TDuration::days(10),
        usage: Usage::Gateway,
    };
    let server_only = NodeProfile { usage: Usage::ServerOnly, ..NodeProfile::gateway(now, 5) };
    let stranger_root = Authority::new_root(&region("wuxi"), now, 10).unwrap();

    let cases: Vec<(&str, IssuedNode, Expect, Refusal)> = vec![
        (
            "unknown CA",
            stranger_root.issue_node(&police, NodeProfile::gateway(now, 5)).unwrap(),
            |e| matches!(e, PeerError::UnknownCa(_)),
            Refusal::UnknownIssuer,
        ),
        (
            "expired",
            fed.liangxi.issue_node(&police, expired).unwrap(),
            |e| *e == PeerError::Expired,
            Refusal::Expired,
        ),
        (
            "not yet valid",
            fed.liangxi.issue_node(&police, future).unwrap(),
            |e| *e == PeerError::NotYetValid,
            Refusal::NotYetValid,
        ),
        (
            "region overstep",
            danger::issue_node_unchecked(&fed.xinwu, &police, NodeProfile::gateway(now, 5)).unwrap(),
            |e| matches!(e, PeerError::RegionNotCovered { .. }),
            Refusal::OutOfRegion,
        ),
        (
            "wrong usage",
            fed.liangxi.issue_node(&police, server_only).unwrap(),
            |e| *e == PeerError::WrongUsage(Role::Client),
            Refusal::WrongUsage,
        ),
        (
            "self-signed",
            danger::self_signed_node(&police, now).unwrap(),
            |e| matches!(e, PeerError::SelfSigned(_)),
            Refusal::UnknownIssuer,
        ),
    ];
    for (what, issued, expect, told) in cases {
        seen.lock().unwrap().clear();
        let client = bare_link(&fed, "police@wuxi.liangxi", &issued);
        let err = dial(&client, &server).await.expect_err(what);
        // The refused consumer is told which, in its own terms.
        assert!(matches!(err, LinkError::Refused { refusal, .. } if refusal == told), "{what}: {err}");
        assert_eq!(err.to_string(), format!("petition@wuxi refused us: {}", told.phrase()), "{what}");
        let reasons = seen.lock().unwrap().clone();
        assert_eq!(reasons.len(), 1, "{what}: {reasons:?}");
        assert!(expect(&reasons[0].error), "{what}: server recorded {:?}", reasons[0].error);
        assert_eq!(reasons[0].role, Role::Client);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn revoked_certificate_is_refused_after_reload_and_live_connection_closed() {
    let fed = Federation::new();
    let server = fed.start("court@wuxi.xinwu").await;
    let issued = fed.issue("police@wuxi.liangxi");
    let client = bare_link(&fed, "police@wuxi.liangxi", &issued);
    let live = dial(&client, &server).await.unwrap();

    let leaf = fed.dir.path().join("police.crt");
    std::fs::write(&leaf, fedgate_certs::store::certs_pem(&issued.chain[..1])).unwrap();
    fedgate_certs::store::revoke(&fed.dir.path().join("pki/liangxi"), &leaf, now()).unwrap();
    // The reload task polls every second; wait for it to close the live connection.
    let closed = tokio::time::timeout(Duration::from_secs(10), live.conn.closed())
        .await
        .expect("live connection not closed");
    assert!(closed.to_string().contains("revoked"), "{closed}");
    assert_eq!(Refusal::from_connection_error(&closed), Some(Refusal::Revoked), "{closed}");
    let err = link::request_one(&live, &Message::CatalogRequest).await.unwrap_err();
    assert_eq!(err.to_string(), "court@wuxi.xinwu refused us: our certificate is revoked");

    let seen = record_rejections(&server);
    let fresh = bare_link(&fed, "police@wuxi.liangxi", &issued);
    let err = dial(&fresh, &server).await.unwrap_err();
    assert_eq!(err.to_string(), "court@wuxi.xinwu refused us: our certificate is revoked");
    assert_eq!(seen.lock().unwrap()[0].error, PeerError::Revoked);
    server.shutdown().await;
}

/// A revoked peer that resumes its earlier TLS session skips the certificate verifier; the
/// gateway's own check after the handshake cuts it with the same close code and reason.
#[tokio::test]
async fn a_revoked_peer_resuming_its_tls_session_is_told_why() {
    let fed = Federation::new();
    let server = fed.start("court@wuxi.xinwu").await;
    let issued = fed.issue("police@wuxi.liangxi");
    let client = bare_link(&fed, "police@wuxi.liangxi", &issued);
    let first = dial(&client, &server).await.unwrap();
    // Session tickets arrive after the handshake; a request round trip makes sure we hold one.
    let hello = Message::Hello { version: 1, node: "police@wuxi.liangxi".into(), software: "t".into() };
    link::request_one(&first, &hello).await.unwrap();

    let leaf = fed.dir.path().join("police.crt");
    std::fs::write(&leaf, fedgate_certs::store::certs_pem(&issued.chain[..1])).unwrap();
    fedgate_certs::store::revoke(&fed.dir.path().join("pki/liangxi"), &leaf, now()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), first.conn.closed())
        .await
        .expect("live connection not closed");

    let seen = record_rejections(&server);
    // Same client config, so rustls offers the stored session.
    let err = dial(&client, &server).await.unwrap_err();
    assert_eq!(err.to_string(), "court@wuxi.xinwu refused us: our certificate is revoked");
    // The handshake completed (a TLS refusal would be an alert, a transport-level close); the
    // gateway's check after it closed with the application code for a revoked certificate.
    let LinkError::Refused { detail, .. } = &err else { unreachable!() };
    let code = Refusal::Revoked.close_code();
    assert_eq!(detail, &format!("closed by peer: certificate revoked (code {code})"), "{err:?}");
    let observed = seen.lock().unwrap().clone();
    assert_eq!(observed.len(), 1, "{observed:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn client_refuses_a_server_that_is_not_the_node_it_dialled() {
    let fed = Federation::new();
    let real = fed.start("court@wuxi.xinwu").await;
    let client = fed.start("police@wuxi.liangxi").await;
    let err = client.link().connection(&id("petition@wuxi"), real.quic_addr().unwrap()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "petition@wuxi: certificate rejected: expected node petition@wuxi, but the peer is court@wuxi.xinwu"
    );
    real.shutdown().await;
    client.shutdown().await;
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    let fed = Federation::new();
    let server = fed.start("petition@wuxi").await;
    let verifier = FederationVerifier::new(TrustStore::new(fed.root.root().clone(), &[]).unwrap());
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(fedgate_certs::tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![fedgate_certs::tls::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = ep
        .connect(server.quic_addr().unwrap(), &id("petition@wuxi").to_server_name())
        .unwrap()
        .await
        .unwrap();
    let attempt = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&fedgate_gateway::wire::encode(&Message::Hello {
            version: 1,
            node: "petition@wuxi".into(),
            software: "t".into(),
        }))
        .await?;
        send.finish()?;
        recv.read_to_end(1024).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(attempt.await.is_err(), "a client without a certificate got an answer");
    let reason = conn.close_reason().expect("connection closed").to_string();
    assert!(reason.contains("certificate"), "{reason}");
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_gateway_keeps_serving() {
    let fed = Federation::new();
    let server = fed.start("petition@wuxi").await;
    let issued = fed.issue("police@wuxi.liangxi");
    let client = bare_link(&fed, "police@wuxi.liangxi", &issued);
    let pc = dial(&client, &server).await.unwrap();
    // A request frame over the request cap is a bad request, refused at its header.
    for (garbage, want) in [
        (&b"\x00\x00\x00\x05hello"[..], ErrorCode::Malformed),
        (b"\xff\xff\xff\xff", ErrorCode::BadRequest),
        (b"\x00\x00\x00\x02\xa1\x00", ErrorCode::Malformed),
    ] {
        let (mut send, mut recv) = pc.conn.open_bi().await.unwrap();
        send.write_all(garbage).await.unwrap();
        send.finish().unwrap();
        match link::read_frame(&mut recv, "server").await.unwrap() {
            Some(Message::Error { code, .. }) => assert_eq!(code, want),
            other => panic!("expected a malformed-frame error, got {other:?}"),
        }
    }
    // A lie about who we are is refused, the certificate's identity stands.
    let lie = Message::Hello { version: 1, node: "court@wuxi.xinwu".into(), software: "t".into() };
    let err = link::request_one(&pc, &lie).await.unwrap_err();
    assert!(matches!(err, LinkError::Remote { code: ErrorCode::WrongIdentity, .. }), "{err}");
    // The connection still serves a proper hello.
    let hello = Message::Hello { version: 1, node: "police@wuxi.liangxi".into(), software: "t".into() };
    match link::request_one(&pc, &hello).await.unwrap() {
        Message::Welcome { node, audit_key: Some(k) } => {
            assert_eq!(node, "petition@wuxi");
            // Its audit key, vouched for by the certificate this connection was made with.
            let (name, _) = fedgate_gateway::exchange::witness::audit_verifier(&pc.peer, &k).unwrap();
            assert_eq!(name, "fedgate.audit/petition@wuxi");
        }
        other => panic!("expected a welcome naming the audit key, got {other:?}"),
    }
    server.shutdown().await;
}

#[test]
fn tls_configs_need_trust_then_identity() {
    // Compile-time property really; here we check the built configs' settings.
    let fed = Federation::new();
    let issued = fed.issue("petition@wuxi");
    let v = FederationVerifier::new(TrustStore::new(fed.root.root().clone(), &[]).unwrap());
    let b = TlsBuilder::new(v).identity(issued.chain.clone(), key_of(&issued));
    let s = b.server().unwrap();
    let c = b.client().unwrap();
    assert_eq!(s.max_early_data_size, 0);
    assert!(!c.enable_early_data);
    assert_eq!(s.alpn_protocols, vec![b"fedgate/1".to_vec()]);
}

/// A client that stalls in the middle of its handshake (here: its certificate check sleeps).
#[derive(Debug)]
struct SlowVerifier(Duration);

impl rustls::client::danger::ServerCertVerifier for SlowVerifier {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        std::thread::sleep(self.0);
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = fedgate_certs::tls::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        fedgate_certs::tls::provider().signature_verification_algorithms.supported_schemes()
    }
}

/// One stalled handshake used to hold the gateway's accept loop (handshakes ran one at a time),
/// so every other peer waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_does_not_hold_up_other_peers() {
    let fed = Federation::new();
    let server = fed.start("petition@wuxi").await;
    let addr = server.quic_addr().unwrap();
    let issued = fed.issue("grid@wuxi.liangxi.chongan");
    let stall = Duration::from_secs(4);
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(fedgate_certs::tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SlowVerifier(stall)))
        .with_client_auth_cert(issued.chain.clone(), key_of(&issued))
        .unwrap();
    tls.alpn_protocols = vec![fedgate_certs::tls::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    // Its own runtime, so its sleeping verifier blocks nobody but itself.
    let staller = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
            let _ = ep.connect(addr, &id("petition@wuxi").to_server_name()).unwrap().await;
        })
    });
    // Let the stalled handshake reach the server first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let honest = bare_link(&fed, "police@wuxi.liangxi", &fed.issue("police@wuxi.liangxi"));
    let started = std::time::Instant::now();
    dial(&honest, &server).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "an honest peer waited {took:?} behind a stalled handshake");
    staller.join().unwrap();
    server.shutdown().await;
}
