//! The web console against real gateways on loopback (mutual-TLS QUIC, real PKI, SQLite state,
//! the real audit log): logins, sessions, CSRF, roles enforced on every page and action, a
//! sharing request approved by clicking through the console and in force for a real query,
//! and every login and change in the audit log with the account's name.

mod common;

use std::time::{Duration, Instant};

use common::api::api;
use common::console::{csrf_in, Client};
use common::*;
use fedgate_audit::{self as audit, AuditKeys, Entry, Kind};
use fedgate_gateway::console::accounts::{AccountStore, Role};
use fedgate_gateway::node::RunningNode;

const PROVIDER: &str = "womens-federation@wuxi";
const CONSUMER: &str = "court@wuxi.xinwu";
const PASSWORD: &str = "console test password";

/// The steward's own grants: nothing for the court.
const GRANTS: &str = r#"
[[grant]]
id = "police-cases"
to = { department = "police" }
datasets = ["cases"]
purposes = ["law-enforcement"]
clearance = 2
"#;

struct Setup {
    _fed: Federation,
    provider: RunningNode,
    consumer: RunningNode,
}

impl Setup {
    fn console(&self) -> Client {
        Client::new(self.provider.console_addr().expect("the provider serves a console"))
    }

    async fn logged_in(&self, name: &str) -> Client {
        let mut c = self.console();
        let a = c.login(name, PASSWORD).await;
        assert_eq!(a.status, 303, "{name} logs in: {}", a.body);
        c
    }
}

async fn setup() -> Setup {
    let fed = Federation::new();
    let sources = fed.sqlite_sources(&["cases"]);
    let conn = rusqlite::Connection::open(fed.dir.path().join("sources.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO cases VALUES ('C001', 'wuxi.xinwu', '王小明'), ('C002', 'wuxi.liangxi', '李四');",
    )
    .unwrap();
    let cat = fed.file("cases.catalog.toml", &dataset("cases", PROVIDER, "conditional"));
    let grants = fed.file("cases.grants.toml", GRANTS);
    let extra = format!(
        "console = \"127.0.0.1:0\"\ncatalog = [{:?}]\ngrants = [{:?}]\n{sources}",
        path_str(&cat),
        path_str(&grants)
    );
    let provider = fed.start_with(PROVIDER, &extra).await;
    let accounts = AccountStore::open(&AccountStore::path_in(&provider.config().state_dir)).unwrap();
    for (name, role) in
        [("wang.steward", Role::Steward), ("li.operator", Role::Operator), ("zhao.auditor", Role::Auditor)]
    {
        accounts.add(name, role, PASSWORD, 0).unwrap();
    }
    let consumer = fed.start_with(CONSUMER, &peer_entry(&provider)).await;
    Setup { _fed: fed, provider, consumer }
}

fn console_entries(node: &RunningNode) -> Vec<(String, String)> {
    audit_entries(node)
        .into_iter()
        .filter(|e| {
            e.kind == Some(Kind::Governance)
                && e.decision.as_deref().is_some_and(|d| d.starts_with("console-"))
        })
        .map(|e| (e.decision.unwrap_or_default(), e.detail.unwrap_or_default()))
        .collect()
}

const ASK: &str = r#"{"peer":"womens-federation@wuxi","dataset":"cases","purpose":"dispute-mediation","fields":["case_id","party_name"],"reason":"家事纠纷 <script>alert(1)</script> (2026) 锡新民初 17"}"#;

/// The consumer applies; returns the request id once the provider holds it.
async fn apply(s: &Setup) -> String {
    let (status, v) = api(&s.consumer, "POST", "/v1/requests", ASK).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = api(&s.provider, "GET", &format!("/v1/requests/{id}"), "").await;
        if status == 200 && v["state"] == "pending" {
            return id;
        }
        assert!(Instant::now() < deadline, "the provider never held request {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn query(consumer: &RunningNode) -> (u16, serde_json::Value) {
    let body = r#"{"peer":"womens-federation@wuxi","dataset":"cases","purpose":"dispute-mediation"}"#;
    api(consumer, "POST", "/v1/query", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_a_login_and_the_session_cookie_is_httponly_and_samesite_strict() {
    let s = setup().await;
    let mut c = s.console();
    let a = c.get("/").await;
    assert_eq!((a.status, a.header("location")), (303, Some("/login")), "no session: to the login page");
    let a = c.get("/audit").await;
    assert_eq!(a.status, 303);

    let a = c.login("wang.steward", PASSWORD).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let session =
        a.all("set-cookie").into_iter().find(|v| v.starts_with("fedgate_session=")).unwrap().to_owned();
    let id = session.split(';').next().unwrap().trim_start_matches("fedgate_session=");
    assert_eq!(id.len(), 64, "256 random bits: {session}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.split("; ").any(|f| f == flag), "{flag} missing: {session}");
    }
    let a = c.get("/").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("概览") && a.body.contains(PROVIDER), "zh-CN by default");
    for (h, want) in
        [("x-frame-options", "DENY"), ("cache-control", "no-store"), ("x-content-type-options", "nosniff")]
    {
        assert_eq!(a.header(h), Some(want), "{h}");
    }
    assert!(a.header("content-security-policy").is_some_and(|v| v.contains("default-src 'none'")));

    // English on request, remembered in a cookie.
    let a = c.get("/?lang=en").await;
    assert!(a.body.contains("Overview") && !a.body.contains("概览"), "{}", a.body);
    let a = c.get("/catalog").await;
    assert!(a.body.contains("Catalog") && a.body.contains("party_name"), "{}", a.body);

    // A forged cookie is no session.
    let mut forged = s.console();
    forged.cookies.insert("fedgate_session".into(), "0".repeat(64));
    assert_eq!(forged.get("/").await.status, 303);

    // Logged out, the old cookie no longer works.
    let token = c.csrf().await;
    let old = c.cookies.get("fedgate_session").cloned().unwrap();
    assert_eq!(c.post("/logout", &[("csrf", &token)]).await.status, 303);
    let mut replay = s.console();
    replay.cookies.insert("fedgate_session".into(), old);
    assert_eq!(replay.get("/").await.status, 303, "a logged-out session is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_csrf_token_or_with_a_wrong_one_is_403() {
    let s = setup().await;
    let id = apply(&s).await;
    let mut c = s.logged_in("wang.steward").await;
    let token = c.csrf().await;
    let approve = format!("/requests/{id}/approve");
    let a = c.post(&approve, &[("clearance", "3"), ("days", "30")]).await;
    assert_eq!(a.status, 403, "no token: {}", a.body);
    let wrong = "f".repeat(64);
    let a = c.post(&approve, &[("csrf", &wrong), ("clearance", "3"), ("days", "30")]).await;
    assert_eq!(a.status, 403, "wrong token: {}", a.body);
    let a = c.request("POST", &approve, "").await;
    assert_eq!(a.status, 403, "no body at all");
    let (_, v) = api(&s.provider, "GET", &format!("/v1/requests/{id}"), "").await;
    assert_eq!(v["state"], "pending", "nothing was approved: {v}");
    // Another session's token is a wrong token.
    let mut other = s.logged_in("wang.steward").await;
    let other_token = other.csrf().await;
    assert_ne!(other_token, token);
    assert_eq!(c.post(&approve, &[("csrf", &other_token)]).await.status, 403);
    assert_eq!(c.post("/logout", &[]).await.status, 403, "logging out needs the token too");

    // The login form: its token must match its cookie.
    let mut fresh = s.console();
    let form = fresh.get("/login").await;
    let login_token = csrf_in(&form.body).unwrap();
    fresh.cookies.clear();
    let a = fresh
        .post("/login", &[("csrf", &login_token), ("name", "wang.steward"), ("password", PASSWORD)])
        .await;
    assert_eq!(a.status, 403, "no login cookie: {}", a.body);
    let mut fresh = s.console();
    fresh.get("/login").await;
    let a = fresh.post("/login", &[("csrf", "x"), ("name", "wang.steward"), ("password", PASSWORD)]).await;
    assert_eq!(a.status, 403, "wrong login token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_lock_the_account_for_a_while_but_not_the_others() {
    let s = setup().await;
    let mut c = s.console();
    for i in 0..5 {
        let a = c.login("li.operator", "not the password").await;
        assert_eq!(a.status, 401, "attempt {i}: {}", a.body);
        assert!(a.body.contains("账号或密码错误"), "{}", a.body);
        assert!(!a.all("set-cookie").iter().any(|v| v.starts_with("fedgate_session")));
    }
    let a = c.login("li.operator", PASSWORD).await;
    assert_eq!(a.status, 429, "locked, even with the right password: {}", a.body);
    assert!(a.header("retry-after").is_some_and(|v| v.parse::<u64>().unwrap() > 60));
    let a = s.console().login("zhao.auditor", PASSWORD).await;
    assert_eq!(a.status, 303, "another account is not locked");
    // Unknown accounts fail the same way as wrong passwords.
    let a = s.console().login("nobody", PASSWORD).await;
    assert_eq!(a.status, 401);
    let logged = console_entries(&s.provider);
    let failed = logged.iter().filter(|(d, _)| d == "console-login-failed").count();
    assert_eq!(failed, 6, "every checked failure is audited: {logged:?}");
    assert!(logged
        .iter()
        .any(|(d, x)| d == "console-login-failed" && x.contains("li.operator") && x.contains("127.0.0.1")));
    assert!(logged.iter().any(|(d, x)| d == "console-login" && x.contains("zhao.auditor (auditor)")));
}

/// Every page and action, with the one role allowed it (None: everyone).
fn routes(id: &str) -> Vec<(&'static str, String, Option<Role>)> {
    vec![
        ("GET", "/".into(), None),
        ("GET", "/catalog".into(), Some(Role::Steward)),
        ("GET", "/grants".into(), Some(Role::Steward)),
        ("POST", "/grants/explain".into(), Some(Role::Steward)),
        ("GET", "/requests".into(), Some(Role::Steward)),
        ("POST", format!("/requests/{id}/refuse"), Some(Role::Steward)),
        ("POST", format!("/requests/{id}/approve"), Some(Role::Steward)),
        ("POST", format!("/requests/{id}/revoke"), Some(Role::Steward)),
        ("GET", "/objections".into(), Some(Role::Steward)),
        ("POST", format!("/objections/{id}/accept"), Some(Role::Steward)),
        ("POST", format!("/objections/{id}/reject"), Some(Role::Steward)),
        ("GET", "/subscriptions".into(), Some(Role::Operator)),
        ("GET", "/referrals".into(), Some(Role::Operator)),
        ("GET", format!("/referrals/{id}"), Some(Role::Operator)),
        ("GET", "/audit".into(), Some(Role::Auditor)),
        ("GET", "/audit/entry/0".into(), Some(Role::Auditor)),
        ("GET", "/audit/proof/0".into(), Some(Role::Auditor)),
        ("POST", "/audit/verify".into(), Some(Role::Auditor)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_gets_403_on_the_other_roles_pages_and_actions() {
    let s = setup().await;
    let id = apply(&s).await;
    for (name, role) in
        [("wang.steward", Role::Steward), ("li.operator", Role::Operator), ("zhao.auditor", Role::Auditor)]
    {
        let mut c = s.logged_in(name).await;
        let token = c.csrf().await;
        for (method, path, allowed) in routes(&id) {
            let a = match method {
                "GET" => c.get(&path).await,
                _ => c.post(&path, &[("csrf", &token), ("reason", "role test")]).await,
            };
            if allowed.is_none_or(|r| r == role) {
                assert_ne!(a.status, 403, "{name} may {method} {path}: {}", a.body);
            } else {
                assert_eq!(a.status, 403, "{name} must not {method} {path}: {}", a.body);
            }
        }
        // The menu shows only the role's pages.
        let home = c.get("/").await.body;
        assert_eq!(home.contains("href=\"/audit\""), role == Role::Auditor, "{name}");
        assert_eq!(home.contains("href=\"/requests\""), role == Role::Steward, "{name}");
    }
    // The steward's refusal above was the only change; the others were refused before acting.
    let (_, v) = api(&s.provider, "GET", &format!("/v1/requests/{id}"), "").await;
    assert_eq!(v["state"], "refused", "{v}");
    assert_eq!(v["answer_reason"], "role test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reads_the_log_but_no_record_through_any_route() {
    let s = setup().await;
    let id = apply(&s).await;
    let mut steward = s.logged_in("wang.steward").await;
    let token = steward.csrf().await;
    let a = steward
        .post(&format!("/requests/{id}/approve"), &[("csrf", &token), ("clearance", "3"), ("days", "30")])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (status, v) = query(&s.consumer).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.as_str().unwrap_or_default().contains("王小明"), "records did flow: {v}");

    let mut c = s.logged_in("zhao.auditor").await;
    let token = c.csrf().await;
    let mut bodies = Vec::new();
    let n = audit_entries(&s.provider).len();
    for path in [
        "/",
        "/audit",
        "/audit?text=%E7%8E%8B",
        "/catalog",
        "/grants",
        "/requests",
        "/subscriptions",
        "/referrals",
    ] {
        bodies.push((path.to_owned(), c.get(path).await));
    }
    for seq in 0..n {
        bodies.push((format!("/audit/entry/{seq}"), c.get(&format!("/audit/entry/{seq}")).await));
        bodies.push((format!("/audit/proof/{seq}"), c.get(&format!("/audit/proof/{seq}")).await));
    }
    bodies.push(("/audit/verify".into(), c.post("/audit/verify", &[("csrf", &token)]).await));
    for (path, a) in &bodies {
        for record in ["王小明", "李四", "C001", "C002"] {
            assert!(!a.body.contains(record), "{path} shows record content {record}: {}", a.body);
        }
    }
    let audit = &bodies.iter().find(|(p, _)| p == "/audit").unwrap().1;
    assert_eq!(audit.status, 200);
    assert!(
        audit.body.contains("transfer-end") && audit.body.contains(CONSUMER),
        "the log is there: {}",
        audit.body
    );
    let verify = &bodies.last().unwrap().1;
    assert!(
        verify.body.contains("id=\"verify-result\"") && verify.body.contains("校验通过"),
        "{}",
        verify.body
    );
    // A proof needs a signed checkpoint covering the entry; checkpoints come at a bounded interval.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut proof = c.get("/audit/proof/1").await;
    while proof.status != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        proof = c.get("/audit/proof/1").await;
    }
    let proof = &proof;
    assert_eq!(proof.status, 200, "{}", proof.body);
    assert!(proof.header("content-disposition").is_some_and(|v| v.contains("proof-1.json")));
    let p: audit::InclusionProof = serde_json::from_str(&proof.body).unwrap();
    let verifier = audit::read_verifier(&s.provider.config().audit_dir.join("signing.pub")).unwrap();
    audit::check_proof(&p, &verifier).expect("the downloaded proof checks offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_approved_in_the_console_is_a_grant_in_force_for_a_real_query_and_audited() {
    let s = setup().await;
    let (status, v) = query(&s.consumer).await;
    assert_eq!(status, 403, "denied before: {v}");
    let id = apply(&s).await;
    let mut c = s.logged_in("wang.steward").await;
    let inbox = c.get("/requests").await;
    assert_eq!(inbox.status, 200);
    assert!(inbox.body.contains(&format!("/requests/{id}/approve")), "{}", inbox.body);
    assert!(
        inbox.body.contains("家事纠纷 &#60;script&#62;") || inbox.body.contains("家事纠纷 &lt;script&gt;"),
        "escaped, Chinese intact: {}",
        inbox.body
    );
    assert!(!inbox.body.contains("<script>alert"), "never run");
    let token = csrf_in(&inbox.body).unwrap();
    let a = c
        .post(
            &format!("/requests/{id}/approve"),
            &[("csrf", &token), ("clearance", "3"), ("days", "30"), ("rows", "own")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("已批准"), "{}", a.body);
    let (status, v) = query(&s.consumer).await;
    assert_eq!(status, 200, "in force at once: {v}");
    let text = v.as_str().unwrap_or_default();
    assert!(text.contains("王小明") && !text.contains("李四"), "{text}");

    // The explain form agrees, with per-field obligations.
    let a = c
        .post(
            "/grants/explain",
            &[
                ("csrf", &token),
                ("peer", CONSUMER),
                ("dataset", "cases"),
                ("purpose", "dispute-mediation"),
                ("action", "read"),
            ],
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains(&format!("request-{id}")) && a.body.contains("party_name"), "{}", a.body);
    let a = c
        .post(
            "/grants/explain",
            &[
                ("csrf", &token),
                ("peer", "grid@wuxi.liangxi.chongan"),
                ("dataset", "cases"),
                ("purpose", "dispute-mediation"),
                ("action", "read"),
            ],
        )
        .await;
    assert!(a.body.contains("拒绝"), "{}", a.body);
    let a = c
        .post(
            "/grants/explain",
            &[("csrf", &token), ("peer", "not a node"), ("dataset", "cases"), ("purpose", "x")],
        )
        .await;
    assert_eq!(a.status, 200, "a bad peer is a message on the page: {}", a.body);
    assert!(a.body.contains("peer:"), "{}", a.body);

    // Revoked in the console: gone for the next query.
    let a = c.post(&format!("/requests/{id}/revoke"), &[("csrf", &token), ("reason", "案件已结")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (status, _) = query(&s.consumer).await;
    assert_eq!(status, 403, "revoked at once");

    let logged = console_entries(&s.provider);
    let by =
        |d: &str| logged.iter().find(|(x, _)| x == d).map(|(_, detail)| detail.clone()).unwrap_or_default();
    assert!(by("console-login").contains("wang.steward (steward)"), "{logged:?}");
    assert!(
        by("console-approve").contains("wang.steward") && by("console-approve").contains(&id),
        "{logged:?}"
    );
    assert!(by("console-revoke").contains("wang.steward"), "{logged:?}");
    let approve = audit_entries(&s.provider)
        .into_iter()
        .find(|e| e.decision.as_deref() == Some("console-approve"))
        .unwrap();
    assert_eq!(approve.exchange.as_deref(), Some(id.as_str()), "paired with the request by its id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_peers_expiries_the_log_and_the_volume_chart() {
    let s = setup().await;
    let id = apply(&s).await;
    let mut steward = s.logged_in("wang.steward").await;
    let token = steward.csrf().await;
    steward
        .post(&format!("/requests/{id}/approve"), &[("csrf", &token), ("clearance", "3"), ("days", "30")])
        .await;
    let (status, _) = query(&s.consumer).await;
    assert_eq!(status, 200);
    let mut c = s.logged_in("li.operator").await;
    let a = c.get("/?lang=en").await;
    assert_eq!(a.status, 200);
    let b = &a.body;
    assert!(b.contains("node.crt") && b.contains("crl.pem"), "{b}");
    assert!(b.contains(CONSUMER) && b.contains("class=\"up\""), "the court dialled in: {b}");
    assert!(b.contains("<svg") && b.contains("court@wuxi.xinwu · cases"), "the chart: {b}");
    assert!(b.contains("id=\"audit-entries\""), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_account_is_logged_out_at_its_next_request() {
    let s = setup().await;
    let mut c = s.logged_in("li.operator").await;
    assert_eq!(c.get("/subscriptions").await.status, 200);
    let accounts = AccountStore::open(&AccountStore::path_in(&s.provider.config().state_dir)).unwrap();
    accounts.remove("li.operator").unwrap();
    assert_eq!(c.get("/subscriptions").await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_the_login_page_again_keeps_the_form_already_shown_valid() {
    let s = setup().await;
    let mut c = s.console();
    let form = c.get("/login").await;
    let token = csrf_in(&form.body).unwrap();
    // What a browser does unprompted: /favicon.ico is no redirect to the login page, and a
    // second login page (another tab) keeps the token of the first.
    let icon = c.get("/favicon.ico").await;
    assert_eq!((icon.status, icon.header("location")), (204, None));
    let again = c.get("/login").await;
    assert_eq!(csrf_in(&again.body).as_deref(), Some(token.as_str()));
    let a = c.post("/login", &[("csrf", &token), ("name", "wang.steward"), ("password", PASSWORD)]).await;
    assert_eq!(a.status, 303, "the first form still logs in: {}", a.body);
    // A token the server did not make is not taken over.
    let mut other = s.console();
    other.cookies.insert("fedgate_login_csrf".into(), "chosen-by-someone-else".into());
    let form = other.get("/login").await;
    assert_ne!(csrf_in(&form.body).as_deref(), Some("chosen-by-someone-else"));
}

/// The consumer objects to field `party_name` of record `key` (it receives it under the grant
/// the steward approved); returns the objection's id once the provider holds it open.
async fn objection(s: &Setup, key: &str, proposed: Option<&str>) -> String {
    let proposed = proposed.map(|p| format!(r#","proposed":"{p}""#)).unwrap_or_default();
    let body = format!(
        r#"{{"peer":"{PROVIDER}","dataset":"cases","purpose":"dispute-mediation","key":"{key}","field":"party_name","reason":"当事人姓名有误 <b>核对</b>"{proposed}}}"#
    );
    let (status, v) = api(&s.consumer, "POST", "/v1/objections", &body).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = api(&s.provider, "GET", &format!("/v1/objections/{id}"), "").await;
        if status == 200 && v["state"] == "open" {
            return id;
        }
        assert!(Instant::now() < deadline, "the provider never held objection {id}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_steward_accepts_with_a_correction_or_rejects_objections_in_the_console_and_both_are_audited() {
    let s = setup().await;
    let db = s._fed.dir.path().join("sources.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("INSERT INTO cases VALUES ('C003', 'wuxi.xinwu', '赵六');")
        .unwrap();
    let req = apply(&s).await;
    let (status, v) =
        api(&s.provider, "POST", &format!("/v1/requests/{req}/approve"), r#"{"clearance":3,"days":30}"#)
            .await;
    assert_eq!(status, 200, "{v}");
    let to_accept = objection(&s, "C001", Some("王晓明")).await;
    let to_reject = objection(&s, "C003", None).await;

    // Only the steward sees the inbox or decides.
    for name in ["li.operator", "zhao.auditor"] {
        let mut c = s.logged_in(name).await;
        let token = c.csrf().await;
        assert_eq!(c.get("/objections").await.status, 403, "{name}");
        let a =
            c.post(&format!("/objections/{to_reject}/reject"), &[("csrf", &token), ("reason", "x")]).await;
        assert_eq!(a.status, 403, "{name}: {}", a.body);
    }
    let mut c = s.logged_in("wang.steward").await;
    let token = c.csrf().await;
    let inbox = c.get("/objections").await;
    assert_eq!(inbox.status, 200);
    for id in [&to_accept, &to_reject] {
        assert!(inbox.body.contains(&format!("id=\"objection-{id}\"")), "{}", inbox.body);
        assert!(inbox.body.contains(&format!("action=\"/objections/{id}/accept\"")));
    }
    assert!(inbox.body.contains("&#60;b&#62;核对&#60;/b&#62;"), "the reason is escaped: {}", inbox.body);
    assert!(inbox.body.contains("value=\"王晓明\""), "the proposed value fills the correction");
    // No token: refused; a rejection needs a reason.
    let a = c.post(&format!("/objections/{to_reject}/reject"), &[("reason", "stands")]).await;
    assert_eq!(a.status, 403);
    let a = c.post(&format!("/objections/{to_reject}/reject"), &[("csrf", &token), ("reason", " ")]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let (_, v) = api(&s.provider, "GET", &format!("/v1/objections/{to_reject}"), "").await;
    assert_eq!(v["state"], "open", "nothing decided yet: {v}");

    let a = c
        .post(
            &format!("/objections/{to_accept}/accept"),
            &[("csrf", &token), ("value", "王晓明"), ("reason", "与当事人核实")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("已采纳"), "{}", a.body);
    assert!(
        a.body.contains("href=\"/objections?lang=en\""),
        "the language link leads to the page, not the action"
    );
    let name: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT party_name FROM cases WHERE case_id = 'C001'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "王晓明", "the source is corrected by the same path as `fedgate objections accept`");
    let (_, v) = api(&s.provider, "GET", &format!("/v1/objections/{to_accept}"), "").await;
    assert_eq!((v["state"].as_str(), v["corrected"].as_bool()), (Some("accepted"), Some(true)), "{v}");

    // Accepting without a value when the source still holds the value objected to is refused.
    let a = c.post(&format!("/objections/{to_reject}/accept"), &[("csrf", &token)]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("correct it there first"), "{}", a.body);
    let a = c
        .post(
            &format!("/objections/{to_reject}/reject"),
            &[("csrf", &token), ("reason", "以签字的申请表为准")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (_, v) = api(&s.provider, "GET", &format!("/v1/objections/{to_reject}"), "").await;
    assert_eq!(
        (v["state"].as_str(), v["answer_reason"].as_str()),
        (Some("rejected"), Some("以签字的申请表为准"))
    );
    let a =
        c.post(&format!("/objections/{to_reject}/reject"), &[("csrf", &token), ("reason", "again")]).await;
    assert_eq!(a.status, 400, "a decided objection is not decided again: {}", a.body);

    let all = audit_entries(&s.provider);
    for (id, decision, console) in [
        (&to_accept, "accept", "console-objection-accept"),
        (&to_reject, "reject", "console-objection-reject"),
    ] {
        let mine: Vec<&Entry> = all.iter().filter(|e| e.exchange.as_deref() == Some(id.as_str())).collect();
        assert!(mine.iter().any(|e| e.decision.as_deref() == Some(decision)), "{decision} {id}");
        let by = mine.iter().find(|e| e.decision.as_deref() == Some(console)).expect(console);
        let detail = by.detail.as_deref().unwrap_or_default();
        assert!(detail.contains("wang.steward (steward)"), "{detail}");
    }
}

/// The consumer's log exported for an auditor key, as `fedgate audit export --auditor-key`
/// writes it: every file of the folder, by name.
fn consumer_export(s: &Setup, auditor: &[u8; 32]) -> Vec<(String, Vec<u8>)> {
    let cfg = s.consumer.config();
    let master = match AuditKeys::load_reader(&cfg.audit_key).unwrap() {
        audit::Reader::Node(k) => k,
        audit::Reader::Auditor(_) => unreachable!("a node key"),
    };
    let out = tempfile::tempdir().unwrap();
    audit::export_for(&cfg.audit_dir, out.path(), Some((&master, std::slice::from_ref(auditor)))).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

async fn upload(c: &mut Client, files: &[(String, Vec<u8>)], key: &[u8]) -> common::console::Answer {
    let token = c.csrf().await;
    let mut fields: Vec<(&str, Option<&str>, &[u8])> = vec![("csrf", None, token.as_bytes())];
    fields.extend(files.iter().map(|(n, d)| ("export", Some(n.as_str()), d.as_slice())));
    fields.push(("key", Some("city-audit.key"), key));
    c.upload("/audit/reconcile", &fields).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reconciles_the_nodes_log_with_an_uploaded_peer_export() {
    let s = setup().await;
    let id = apply(&s).await;
    let (status, v) =
        api(&s.provider, "POST", &format!("/v1/requests/{id}/approve"), r#"{"clearance":3,"days":30}"#).await;
    assert_eq!(status, 200, "{v}");
    let (secret, public) = audit::keys::generate_auditor().unwrap();
    let key_file = format!("{}\n", fedgate_catalog::hex(&secret));
    // An export the court made before its query, and one after.
    let before = consumer_export(&s, &public);
    let (status, v) = query(&s.consumer).await;
    assert_eq!(status, 200, "{v}");
    let after = consumer_export(&s, &public);

    let mut c = s.logged_in("zhao.auditor").await;
    let form = c.get("/audit/reconcile").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("enctype=\"multipart/form-data\""), "{}", form.body);

    let a = upload(&mut c, &after, key_file.as_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("id=\"reconcile-verdict\"") && a.body.contains("对账一致"), "{}", a.body);
    assert!(
        a.body.contains(CONSUMER) && a.body.contains("<td>cases</td>"),
        "the query is listed: {}",
        a.body
    );

    // The export from before the query lacks the court's side of it: named, not reconciled.
    let a = upload(&mut c, &before, key_file.as_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("对账不一致") && a.body.contains("class=\"warn\""), "{}", a.body);

    // Bad uploads get a clear answer naming what is wrong.
    let mut stray = after.clone();
    stray.push(("gateway.toml".into(), b"node = 'x'".to_vec()));
    let a = upload(&mut c, &stray, key_file.as_bytes()).await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("&#34;gateway.toml&#34; is not a file of an audit export"), "{}", a.body);
    let partial: Vec<_> = after.iter().filter(|(n, _)| n != "signing.pub").cloned().collect();
    let a = upload(&mut c, &partial, key_file.as_bytes()).await;
    assert!(a.status == 400 && a.body.contains("not a whole export"), "{}", a.body);
    let (stranger, _) = audit::keys::generate_auditor().unwrap();
    let a = upload(&mut c, &after, fedgate_catalog::hex(&stranger).as_bytes()).await;
    assert!(a.status == 400 && a.body.contains("not wrapped for this auditor key"), "{}", a.body);
    let mut cut = after.clone();
    for (_, data) in cut.iter_mut().filter(|(n, _)| n.ends_with(".log")) {
        let n = data.len();
        data[n / 2] ^= 1;
    }
    let a = upload(&mut c, &cut, key_file.as_bytes()).await;
    assert!(a.status == 400 && a.body.contains("does not verify"), "a damaged export: {}", a.body);
    let a = upload(&mut c, &after, b"not a key").await;
    assert!(a.status == 400 && a.body.contains("is not an auditor secret key"), "{}", a.body);
    let mut own = Vec::new();
    let pcfg = s.provider.config();
    let master = match AuditKeys::load_reader(&pcfg.audit_key).unwrap() {
        audit::Reader::Node(k) => k,
        audit::Reader::Auditor(_) => unreachable!("a node key"),
    };
    let out = tempfile::tempdir().unwrap();
    audit::export_for(&pcfg.audit_dir, out.path(), Some((&master, &[public]))).unwrap();
    for e in std::fs::read_dir(out.path()).unwrap() {
        let e = e.unwrap();
        own.push((e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()));
    }
    let a = upload(&mut c, &own, key_file.as_bytes()).await;
    assert!(a.status == 400 && a.body.contains("own log"), "{}", a.body);
    let token = c.csrf().await;
    let a = c.post("/audit/reconcile", &[("csrf", &token)]).await;
    assert!(a.status == 400 && a.body.contains("not a file upload"), "{}", a.body);
    let a = c.upload("/audit/reconcile", &[("key", Some("k"), key_file.as_bytes())]).await;
    assert_eq!(a.status, 403, "no CSRF token in the upload: {}", a.body);

    // Too large: refused from its declared length, before it is read.
    let cookie: Vec<String> = c.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut raw = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let head = format!(
        "POST /audit/reconcile HTTP/1.1\r\nHost: console\r\nCookie: {}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        cookie.join("; "),
        fedgate_gateway::console::reconcile::MAX_UPLOAD + 1
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("fedgate audit reconcile"), "{answer}");

    // Other roles: 403, before anything is read.
    for name in ["wang.steward", "li.operator"] {
        let mut other = s.logged_in(name).await;
        assert_eq!(other.get("/audit/reconcile").await.status, 403, "{name}");
        assert_eq!(upload(&mut other, &after, key_file.as_bytes()).await.status, 403, "{name}");
    }

    // Audited with the account, the key never; nothing is left in the state folder.
    let all = audit_entries(&s.provider);
    let done: Vec<&Entry> =
        all.iter().filter(|e| e.decision.as_deref() == Some("console-reconcile")).collect();
    assert!(done.len() >= 9, "every attempt is audited: {}", done.len());
    let first = done[0].detail.as_deref().unwrap_or_default();
    assert!(
        first.contains("zhao.auditor (auditor)") && first.contains("court@wuxi.xinwu's uploaded export"),
        "{first}"
    );
    assert!(first.ends_with(": reconciled"), "{first}");
    let hex = fedgate_catalog::hex(&secret);
    assert!(all.iter().all(|e| !format!("{e:?}").contains(&hex)), "the auditor's key is in no entry");
    let left: Vec<_> = std::fs::read_dir(&s.provider.config().state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("console-reconcile"))
        .collect();
    assert!(left.is_empty(), "scratch folders left: {left:?}");
}

/// Waits until the provider's log holds a governance entry `decision` about `account` whose
/// detail has `says`.
async fn account_entry(s: &Setup, decision: &str, account: &str, says: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = audit_entries(&s.provider).into_iter().find_map(|e| {
            let d = e.detail.unwrap_or_default();
            (e.decision.as_deref() == Some(decision)
                && d.starts_with(&format!("console account {account} "))
                && d.contains(says))
            .then_some(d)
        });
        if let Some(d) = found {
            return d;
        }
        assert!(Instant::now() < deadline, "no {decision} entry for {account} with {says:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_changes_are_audited_and_a_new_password_or_removal_ends_the_accounts_sessions() {
    let s = setup().await;
    let mut steward = s.logged_in("wang.steward").await;
    let mut operator = s.logged_in("li.operator").await;
    assert_eq!(steward.get("/requests").await.status, 200);
    // What `fedgate user passwd|add|remove` do, from another process's view of console.db.
    let cli = AccountStore::open(&AccountStore::path_in(&s.provider.config().state_dir)).unwrap();
    cli.passwd("wang.steward", "a brand new password", 0).unwrap();
    cli.add("sun.new", Role::Auditor, "another password", 0).unwrap();
    cli.remove("li.operator").unwrap();
    assert_eq!(steward.get("/requests").await.status, 303, "the old password's session ended");
    assert_eq!(operator.get("/subscriptions").await.status, 303, "the removed account's session ended");
    assert_eq!(s.console().login("wang.steward", PASSWORD).await.status, 401);
    assert_eq!(s.console().login("wang.steward", "a brand new password").await.status, 303);
    let d = account_entry(&s, "account-passwd", "wang.steward", "by fedgate user").await;
    assert!(d.contains("(steward)") && d.contains("sessions ended"), "{d}");
    account_entry(&s, "account-add", "sun.new", "by fedgate user").await;
    account_entry(&s, "account-add", "zhao.auditor", "account added").await;
    account_entry(&s, "account-remove", "li.operator", "account removed").await;

    // In the console: the current password is checked, the new one asked twice; then every
    // session of the account ends, the one that changed it too.
    let mut first = s.logged_in("zhao.auditor").await;
    let mut second = s.logged_in("zhao.auditor").await;
    assert_eq!(first.get("/password").await.status, 200);
    let token = first.csrf().await;
    let change = |current: &'static str, repeat: &'static str| {
        [("current", current), ("new", "the auditor's new password"), ("repeat", repeat)]
    };
    let mut form = change("wrong password", "the auditor's new password").to_vec();
    form.push(("csrf", &token));
    assert_eq!(first.post("/password", &form).await.status, 403, "wrong current password");
    let mut form = change(PASSWORD, "something else entirely").to_vec();
    form.push(("csrf", &token));
    assert_eq!(first.post("/password", &form).await.status, 400, "the new password twice");
    let mut form = change(PASSWORD, "the auditor's new password").to_vec();
    assert_eq!(first.post("/password", &form).await.status, 403, "no CSRF token");
    form.push(("csrf", &token));
    let a = first.post("/password", &form).await;
    assert_eq!((a.status, a.header("location")), (303, Some("/login")), "{}", a.body);
    assert_eq!(first.get("/audit").await.status, 303);
    assert_eq!(second.get("/audit").await.status, 303, "the account's other session ended too");
    assert_eq!(s.console().login("zhao.auditor", "the auditor's new password").await.status, 303);
    account_entry(&s, "account-passwd", "zhao.auditor", "by console").await;
    let pending = AccountStore::open(&AccountStore::path_in(&s.provider.config().state_dir)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pending.pending().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "changes audited are marked so");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
