//! Catalog discovery across gateways: metadata only, never `none` datasets, through the API.

mod common;

use common::*;
use fedgate_catalog::Catalog;
use fedgate_gateway::client::Client;
use fedgate_gateway::config;

#[tokio::test]
async fn peers_see_shareable_metadata_through_the_local_api() {
    let fed = Federation::new();
    let provider_catalog = format!(
        "{}{}{}",
        dataset("police-incidents", "police@wuxi.liangxi", "conditional"),
        dataset("police-open-stats", "police@wuxi.liangxi", "unconditional"),
        dataset("police-informants", "police@wuxi.liangxi", "none"),
    );
    let cat = fed.file("police.catalog.toml", &provider_catalog);
    let sources = fed.sqlite_sources(&["police-incidents", "police-open-stats"]);
    let provider =
        fed.start_with("police@wuxi.liangxi", &format!("catalog = [{:?}]\n{sources}", path_str(&cat))).await;
    assert_eq!(provider.shared().catalog().datasets().len(), 3);

    let consumer = fed.start_with("mediation-center@wuxi", &peer_entry(&provider)).await;
    // Straight over QUIC.
    let seen = consumer.shared().peer_catalog(&id("police@wuxi.liangxi")).await.unwrap();
    let ids: Vec<&str> = seen.datasets().iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["police-incidents", "police-open-stats"]);
    assert_eq!(seen.get("police-incidents").unwrap().fields.len(), 3);

    // Through the consumer's local API, as `fedgate catalog list --peer` does.
    let mut cfg = consumer.config().clone();
    cfg.api = consumer.api_addr();
    // The CLI's client blocks, so it runs off the runtime's threads.
    let (via_api, unknown, bad_token) = tokio::task::spawn_blocking(move || {
        let api = Client::new(&cfg).unwrap();
        let via_api: Catalog = api.get_json("/v1/peers/police@wuxi.liangxi/catalog").unwrap();
        let unknown = api.get_json::<Catalog>("/v1/peers/court@wuxi.xinwu/catalog").unwrap_err().to_string();
        std::fs::write(&cfg.api_token, "wrong").unwrap();
        let bad = Client::new(&cfg).unwrap().get_json::<Catalog>("/v1/catalog").unwrap_err().to_string();
        (via_api, unknown, bad)
    })
    .await
    .unwrap();
    assert_eq!(via_api, seen);
    // An unknown peer and a bad token are clear errors.
    assert!(
        unknown.contains(
            "court@wuxi.xinwu is neither under [[peers]] in the config nor in the federation directory"
        ),
        "{unknown}"
    );
    assert!(bad_token.contains("bearer token"), "{bad_token}");
    provider.shutdown().await;
    consumer.shutdown().await;
}

#[tokio::test]
async fn a_gateway_refuses_to_serve_datasets_it_does_not_own() {
    let fed = Federation::new();
    let cat = fed.file("c.toml", &dataset("court-cases", "court@wuxi.xinwu", "conditional"));
    let path = fed.node_folder_with(
        "police@wuxi.liangxi",
        &fed.issue("police@wuxi.liangxi"),
        &format!("catalog = [{:?}]\n", path_str(&cat)),
    );
    let err = fedgate_gateway::node::RunningNode::start(config::load(&path).unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("dataset `court-cases` is owned by court@wuxi.xinwu"), "{err}");
}
