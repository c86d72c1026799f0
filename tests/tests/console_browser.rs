//! The web console in a real headless browser (Debian's chromium, driven through chromedriver
//! over the W3C WebDriver protocol): each role logs in, visits every page it may see (a
//! screenshot of each goes to target/console-screenshots/), is refused the other roles' pages
//! and actions with the 403 page, and the steward approves a sharing request by clicking — the
//! grant then serves a real query. With CI=true a missing browser fails the test; elsewhere it
//! says so and passes.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::api::api;
use common::webdriver::{browser_present, Driver, Session};
use common::*;
use fedgate_audit::{self as audit, AuditKeys};
use fedgate_gateway::console::accounts::{AccountStore, Role};
use fedgate_gateway::node::RunningNode;
use serde_json::json;

const PROVIDER: &str = "womens-federation@wuxi";
const CONSUMER: &str = "court@wuxi.xinwu";
const PASSWORD: &str = "browser test password";
/// The 403 page's heading (zh-CN), in its `#error` paragraph and its title.
const FORBIDDEN: &str = "无权访问";

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The pages of a role beyond the overview, each with an element it must show.
fn pages(role: Role) -> &'static [(&'static str, &'static str)] {
    match role {
        Role::Steward => {
            &[("/catalog", "#dataset-cases"), ("/grants", "#explain-form"), ("/requests", "section.request")]
        }
        Role::Operator => &[("/subscriptions", "main h1"), ("/referrals", "main h1")],
        Role::Auditor => &[
            ("/audit", "#audit-entries"),
            ("/audit/entry/1", "#entry"),
            ("/audit/reconcile", "#reconcile-form"),
        ],
    }
}

/// A change only `role` may make: the form it posts (its path and fields besides the CSRF
/// token). The operator's pages only show.
fn action(role: Role, request: &str) -> Option<(String, serde_json::Value)> {
    match role {
        Role::Steward => {
            Some((format!("/requests/{request}/approve"), json!({"clearance": "2", "days": "30"})))
        }
        Role::Operator => None,
        Role::Auditor => Some(("/audit/verify".into(), json!({}))),
    }
}

/// Posts a form to `path` from the page shown, with the page's CSRF token, as a forged or
/// hand-made form would: the server alone decides.
async fn post_form(b: &Session, path: &str, fields: &serde_json::Value) {
    let script = r#"
        const f = document.createElement('form');
        f.method = 'post';
        f.action = arguments[0];
        const fields = Object.assign({csrf: document.querySelector('input[name=csrf]').value}, arguments[1]);
        for (const [k, v] of Object.entries(fields)) {
            const i = document.createElement('input');
            i.type = 'hidden'; i.name = k; i.value = v;
            f.appendChild(i);
        }
        document.body.appendChild(f);
        f.submit();
    "#;
    b.execute(script, json!([path, fields])).await;
}

async fn login(b: &Session, base: &str, name: &str) {
    b.delete_cookies().await;
    b.goto(&format!("{base}/")).await;
    assert!(b.url().await.ends_with("/login"), "not logged in: to the login page");
    b.type_into("#name", name).await;
    b.type_into("#password", PASSWORD).await;
    b.submit_and_wait("#login", "#logout").await;
    assert!(b.text("#who").await.contains(name), "{name} is logged in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_logs_in_visits_its_pages_is_refused_the_others_and_the_steward_approves_by_clicking() {
    if !browser_present() {
        return;
    }
    // On the heap: the whole walk through the console is one large future.
    Box::pin(walk_through()).await;
}

async fn walk_through() {
    let started = Instant::now();
    let fed = Federation::new();
    let sources = fed.sqlite_sources(&["cases"]);
    let conn = rusqlite::Connection::open(fed.dir.path().join("sources.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO cases VALUES ('C001', 'wuxi.xinwu', '王小明'), ('C002', 'wuxi.liangxi', '欧阳娜娜');",
    )
    .unwrap();
    let cat = fed.file("cases.catalog.toml", &dataset("cases", PROVIDER, "conditional"));
    let extra = format!("console = \"127.0.0.1:0\"\ncatalog = [{:?}]\n{sources}", path_str(&cat));
    let provider = fed.start_with(PROVIDER, &extra).await;
    let accounts = AccountStore::open(&AccountStore::path_in(&provider.config().state_dir)).unwrap();
    // The steward last: the others try its approval first, which must stay undone.
    let logins =
        [("li.operator", Role::Operator), ("zhao.auditor", Role::Auditor), ("wang.steward", Role::Steward)];
    for (name, role) in logins {
        accounts.add(name, role, PASSWORD, 0).unwrap();
    }
    let consumer = fed.start_with(CONSUMER, &peer_entry(&provider)).await;
    let ask = r#"{"peer":"womens-federation@wuxi","dataset":"cases","purpose":"dispute-mediation","fields":["case_id","party_name"],"reason":"家事纠纷调解 (2026) 锡新民初 17号"}"#;
    let (status, v) = api(&consumer, "POST", "/v1/requests", ask).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api(&provider, "GET", &format!("/v1/requests/{id}"), "").await.1["state"] != "pending" {
        assert!(Instant::now() < deadline, "the provider never held the request");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let query = r#"{"peer":"womens-federation@wuxi","dataset":"cases","purpose":"dispute-mediation"}"#;
    assert_ne!(api(&consumer, "POST", "/v1/query", query).await.0, 200, "no grant before the approval");

    let base = format!("http://{}", provider.console_addr().unwrap());
    let shots = screenshots();
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let b = driver.session(profile.path()).await;

    for (name, role) in logins {
        login(&b, &base, name).await;
        let session = b.cookies().await.into_iter().find(|c| c["name"] == "fedgate_session").unwrap();
        assert_eq!(session["httpOnly"], true, "{session}");
        assert_eq!(session["sameSite"], "Strict", "{session}");
        b.find("#peers").await;
        b.screenshot(&shots.join(format!("{}-overview.png", role.as_str()))).await;
        // Every account's own page: its password, reached from its name in the header.
        b.submit_and_wait("#who", "#password-form").await;
        b.screenshot(&shots.join(format!("{}-password.png", role.as_str()))).await;
        for (path, must) in pages(role) {
            b.goto(&format!("{base}{path}")).await;
            b.find(must).await;
            assert!(!b.title().await.contains(FORBIDDEN), "{name} may see {path}");
            let file = format!("{}-{}.png", role.as_str(), path.trim_start_matches('/').replace('/', "-"));
            b.screenshot(&shots.join(file)).await;
        }
        for other in [Role::Steward, Role::Operator, Role::Auditor].into_iter().filter(|r| *r != role) {
            for (path, _) in pages(other) {
                b.goto(&format!("{base}{path}")).await;
                assert!(b.text("#error").await.contains(FORBIDDEN), "{name} must not see {path}");
                assert!(b.title().await.starts_with(FORBIDDEN), "{name} must not see {path}");
            }
            let Some((path, fields)) = action(other, &id) else { continue };
            b.goto(&format!("{base}/")).await;
            post_form(&b, &path, &fields).await;
            assert!(b.text("#error").await.contains(FORBIDDEN), "{name} must not post {path}");
        }
        if role == Role::Auditor {
            Box::pin(reconcile_by_upload(&b, &base, &consumer, &shots)).await;
        }
        if role == Role::Steward {
            let (_, held) = api(&provider, "GET", &format!("/v1/requests/{id}"), "").await;
            assert_eq!(held["state"], "pending", "the other roles' approvals were refused: {held}");
            b.goto(&format!("{base}/requests")).await;
            b.submit_and_wait(&format!("#request-{id} button.approve"), "#flash").await;
            assert!(b.text("#flash").await.contains("已批准"), "approved by clicking");
            b.screenshot(&shots.join("steward-requests-approved.png")).await;
            let (status, v) = api(&consumer, "POST", "/v1/query", query).await;
            assert_eq!(status, 200, "the grant approved by clicking is in force: {v}");
            // The overview's chart counts what was just sent (the README's screenshot).
            b.goto(&format!("{base}/")).await;
            assert!(b.text("#volume-chart").await.contains(CONSUMER), "the chart names the court");
            b.screenshot(&shots.join("overview.png")).await;
            // The court objects to a record it received; the steward accepts by clicking, with
            // the proposed value as the correction, and the source is corrected.
            let body = r#"{"peer":"womens-federation@wuxi","dataset":"cases","purpose":"dispute-mediation","key":"C001","field":"party_name","reason":"当事人姓名有误","proposed":"王晓明"}"#;
            let (status, v) = api(&consumer, "POST", "/v1/objections", body).await;
            assert_eq!(status, 201, "{v}");
            let oid = v["id"].as_str().unwrap().to_owned();
            let deadline = Instant::now() + Duration::from_secs(30);
            while api(&provider, "GET", &format!("/v1/objections/{oid}"), "").await.1["state"] != "open" {
                assert!(Instant::now() < deadline, "the provider never held the objection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            b.goto(&format!("{base}/objections")).await;
            b.find(&format!("#objection-{oid} button.accept")).await;
            b.screenshot(&shots.join("steward-objections-open.png")).await;
            b.submit_and_wait(&format!("#objection-{oid} button.accept"), "#flash").await;
            assert!(b.text("#flash").await.contains("已采纳"), "accepted by clicking");
            let (_, v) = api(&provider, "GET", &format!("/v1/objections/{oid}"), "").await;
            assert_eq!(
                (v["state"].as_str(), v["corrected"].as_bool()),
                (Some("accepted"), Some(true)),
                "{v}"
            );
            let name: String = conn
                .query_row("SELECT party_name FROM cases WHERE case_id = 'C001'", [], |r| r.get(0))
                .unwrap();
            assert_eq!(name, "王晓明", "the source is corrected");
            // English, switched by a link and remembered.
            b.click("a.lang").await;
            b.find("html[lang='en'] #objections").await;
            assert!(b.text("nav").await.contains("Requests"), "English, switched by a link");
            b.goto(&format!("{base}/grants")).await;
            assert!(b.text("#explain").await.contains("Explain"));
            b.screenshot(&shots.join("steward-grants-en.png")).await;
            b.goto(&format!("{base}/?lang=zh-CN")).await;
        }
        b.submit_and_wait("#logout", "#login-form").await;
        assert!(b.url().await.ends_with("/login"), "logged out");
    }
    b.quit().await;
    drop(fed);
    assert!(started.elapsed() < Duration::from_secs(90), "the browser test took {:?}", started.elapsed());
}

/// The auditor reconciles this node's log with the court's export (wrapped for the auditor's
/// key), choosing the files in the upload form.
async fn reconcile_by_upload(b: &Session, base: &str, consumer: &RunningNode, shots: &Path) {
    // The court's export, wrapped for the auditor's key, reconciled with this log.
    let (secret, public) = audit::keys::generate_auditor().unwrap();
    let cfg = consumer.config();
    let audit::Reader::Node(master) = AuditKeys::load_reader(&cfg.audit_key).unwrap() else {
        panic!("a node key")
    };
    let export = tempfile::tempdir().unwrap();
    audit::export_for(&cfg.audit_dir, export.path(), Some((&master, &[public]))).unwrap();
    let key = export.path().join("city-audit.key");
    let files: Vec<PathBuf> = std::fs::read_dir(export.path()).unwrap().map(|e| e.unwrap().path()).collect();
    std::fs::write(&key, fedgate_catalog::hex(&secret)).unwrap();
    b.goto(&format!("{base}/audit/reconcile")).await;
    b.attach("#export-files", &files.iter().map(PathBuf::as_path).collect::<Vec<_>>()).await;
    b.attach("#auditor-key", &[&key]).await;
    b.submit_and_wait("#reconcile", "#reconcile-verdict").await;
    assert!(b.text("#reconcile-verdict").await.contains("对账一致"), "reconciled with the court");
    b.screenshot(&shots.join("auditor-audit-reconciled.png")).await;
}
