//! The console's HTTP side: routes, login and logout, the session and CSRF checks every page
//! and action goes through, the role each one needs, and the audit entries for logins and
//! changes. Pages are rendered by [`super::pages`] from [`super::views`].
//!
//! Order of checks on a POST: a live session (else to the login page), the CSRF token (403),
//! the role (403). Roles are enforced here, on every route; the menu only mirrors them.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fedgate_audit::Kind;

use super::accounts::{AccountStore, Role};
use super::csrf;
use super::i18n::{self, Lang, Text};
use super::pages::*;
use super::sessions::{Locked, Session, Sessions, Throttle};
use super::views;
use crate::state::Shared;

/// The session cookie.
pub const SESSION_COOKIE: &str = "fedgate_session";
/// Audit entries the search page lists at most.
pub const AUDIT_ROWS: usize = 500;
/// Form bodies larger than this are refused (the largest form is a reason of 2 KiB).
const MAX_FORM: usize = 16 * 1024;

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    /// The node.
    pub shared: Arc<Shared>,
    /// Accounts.
    pub accounts: Arc<AccountStore>,
    /// Sessions in force.
    pub sessions: Arc<Sessions>,
    /// Failed-login counters.
    pub throttle: Arc<Throttle>,
}

/// The console's routes.
pub fn router(st: ConsoleState) -> Router {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/password", get(password_form).post(password_change))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        // Browsers ask for it unprompted; a redirect to the login page would be wasted.
        .route("/favicon.ico", get(|| async { harden(StatusCode::NO_CONTENT.into_response()) }))
        .route("/", get(overview))
        .route("/catalog", get(catalog))
        .route("/grants", get(grants))
        .route("/grants/explain", post(explain))
        .route("/requests", get(requests))
        .route("/requests/{id}/{action}", post(request_action))
        .route("/objections", get(objections))
        .route("/objections/{id}/{action}", post(objection_action))
        .route("/subscriptions", get(subscriptions))
        .route("/referrals", get(referrals))
        .route("/referrals/{id}", get(referral))
        .route("/audit", get(audit_search))
        .route("/audit/entry/{seq}", get(audit_entry))
        .route("/audit/proof/{seq}", get(audit_proof))
        .route("/audit/verify", post(audit_verify))
        .route("/audit/reconcile", get(reconcile_form).post(reconcile_upload))
        .fallback(not_found)
        .with_state(st)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The language: `?lang=` first (remembered in a cookie), then the cookie, else zh-CN.
fn lang_of(headers: &HeaderMap, uri: &Uri) -> (Lang, bool) {
    let asked = uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "lang")
            .and_then(|(_, v)| Lang::parse(v))
    });
    match asked {
        Some(l) => (l, true),
        None => (cookie(headers, i18n::COOKIE).and_then(Lang::parse).unwrap_or(Lang::Zh), false),
    }
}

/// Headers every console answer carries: no caching of pages holding personal data, no
/// framing, nothing loaded from elsewhere.
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    r
}

fn html(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => {
            harden((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
        }
        Err(e) => {
            tracing::error!(error = %e, "console page did not render");
            harden(
                (StatusCode::INTERNAL_SERVER_ERROR, "the page did not render; see the gateway's log")
                    .into_response(),
            )
        }
    }
}

fn redirect(to: &str) -> Response {
    harden((StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response())
}

fn set_cookie(r: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A logged-in request: its session and language.
struct Ctx {
    session: Session,
    lang: Lang,
    lang_asked: bool,
    /// The page asked for, where the language link leads back to; empty after a POST, whose
    /// answer links to the page it belongs to instead (not to the action).
    here: String,
}

impl Ctx {
    fn t(&self) -> &'static Text {
        self.lang.text()
    }
}

/// The request's live session, its role re-read from the accounts (a removed account or a
/// changed role counts at once); else a redirect to the login page.
async fn ctx(st: &ConsoleState, headers: &HeaderMap, uri: &Uri) -> Result<Ctx, Response> {
    let (lang, lang_asked) = lang_of(headers, uri);
    let to_login = || {
        let mut r = redirect("/login");
        if lang_asked {
            set_cookie(&mut r, format!("{}={}; Path=/; SameSite=Strict", i18n::COOKIE, lang.tag()));
        }
        r
    };
    let Some(id) = cookie(headers, SESSION_COOKIE) else { return Err(to_login()) };
    let Some(mut session) = st.sessions.touch(id, now_ms()) else { return Err(to_login()) };
    let (accounts, user) = (st.accounts.clone(), session.user.clone());
    match tokio::task::spawn_blocking(move || accounts.current(&user)).await {
        // A changed password ends the sessions made with the old one.
        Ok(Ok(Some((role, stamp)))) if stamp == session.stamp => session.role = role,
        _ => {
            st.sessions.remove(id);
            return Err(to_login());
        }
    }
    Ok(Ctx { session, lang, lang_asked, here: uri.path().to_owned() })
}

fn chrome(st: &ConsoleState, cx: &Ctx, title: &'static str, path: &str) -> Chrome {
    let t = cx.t();
    Chrome {
        t,
        lang: cx.lang,
        node: st.shared.cfg.node.to_string(),
        user: cx.session.user.clone(),
        role: Chrome::role_name(t, cx.session.role),
        csrf: cx.session.csrf.clone(),
        nav: Chrome::nav(t, cx.session.role, path),
        title,
        flash: None,
        here: if cx.here.is_empty() { path.to_owned() } else { cx.here.clone() },
    }
}

/// A page for a logged-in request, remembering a language just chosen.
fn page(cx: &Ctx, status: StatusCode, t: &impl Template) -> Response {
    let mut r = html(status, t);
    if cx.lang_asked {
        set_cookie(&mut r, format!("{}={}; Path=/; SameSite=Strict", i18n::COOKIE, cx.lang.tag()));
    }
    r
}

fn refusal(
    st: &ConsoleState,
    cx: &Ctx,
    status: StatusCode,
    heading: &'static str,
    message: String,
) -> Response {
    let c = chrome(st, cx, heading, "");
    page(cx, status, &ErrorPage { c, heading, message })
}

/// The 403 page unless the session's role is `role`.
fn forbidden(st: &ConsoleState, cx: &Ctx, role: Role) -> Option<Response> {
    if cx.session.role == role {
        return None;
    }
    let t = cx.t();
    let msg = format!("{} ({})", t.forbidden_detail, Chrome::role_name(t, role));
    Some(refusal(st, cx, StatusCode::FORBIDDEN, t.forbidden, msg))
}

/// Returns the 403 page from the handler unless the session's role is `$role`.
macro_rules! require {
    ($st:expr, $cx:expr, $role:expr) => {
        if let Some(r) = forbidden($st, $cx, $role) {
            return r;
        }
    };
}

/// A decoded form body.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        if body.len() > MAX_FORM {
            return Form(Vec::new());
        }
        Form(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn text(&self, key: &str) -> String {
        self.get(key).unwrap_or_default().to_owned()
    }
}

/// A POST from a logged-in session whose form carries the session's CSRF token.
async fn post_ctx(
    st: &ConsoleState,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<(Ctx, Form), Response> {
    let mut cx = ctx(st, headers, uri).await?;
    cx.here.clear();
    let form = Form::parse(body);
    if !csrf::matches(&cx.session.csrf, form.get(csrf::FIELD)) {
        let t = cx.t();
        return Err(refusal(
            st,
            &cx,
            StatusCode::FORBIDDEN,
            t.forbidden,
            "missing or wrong CSRF token".into(),
        ));
    }
    Ok((cx, form))
}

/// Appends a console entry to the node's audit log: who (account and role), what, from where.
async fn record(
    shared: &Shared,
    decision: &str,
    account: &str,
    role: Option<Role>,
    detail: String,
    exchange: Option<String>,
) -> Result<(), String> {
    let mut e = shared.audit_entry(Kind::Governance);
    e.decision = Some(decision.to_owned());
    e.detail = Some(match role {
        Some(r) => format!("console account {account} ({}): {detail}", r.as_str()),
        None => format!("console account {account}: {detail}"),
    });
    e.exchange = exchange;
    shared.audit.append(e).await.map(drop).map_err(|e| {
        tracing::error!(error = %e, "console: the audit entry could not be written");
        e.to_string()
    })
}

fn login_page(
    st: &ConsoleState,
    headers: &HeaderMap,
    lang: Lang,
    name: String,
    error: Option<&'static str>,
    status: StatusCode,
) -> Response {
    let Some(token) = csrf::login_token(cookie(headers, csrf::LOGIN_COOKIE)) else {
        return harden((StatusCode::INTERNAL_SERVER_ERROR, "no system randomness").into_response());
    };
    let p =
        LoginPage { t: lang.text(), node: st.shared.cfg.node.to_string(), csrf: token.clone(), name, error };
    let mut r = html(status, &p);
    set_cookie(&mut r, format!("{}={token}; Path=/login; HttpOnly; SameSite=Strict", csrf::LOGIN_COOKIE));
    set_cookie(&mut r, format!("{}={}; Path=/; SameSite=Strict", i18n::COOKIE, lang.tag()));
    r
}

async fn login_form(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let (lang, _) = lang_of(&headers, &uri);
    login_page(&st, &headers, lang, String::new(), None, StatusCode::OK)
}

async fn login(
    State(st): State<ConsoleState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (lang, _) = lang_of(&headers, &uri);
    let t = lang.text();
    let form = Form::parse(&body);
    let expected = cookie(&headers, csrf::LOGIN_COOKIE).unwrap_or_default();
    if !csrf::matches(expected, form.get(csrf::FIELD)) {
        return harden(
            (StatusCode::FORBIDDEN, "missing or wrong CSRF token: reload the login page").into_response(),
        );
    }
    let name = form.text("name").trim().to_owned();
    let password = form.text("password");
    // Names that cannot exist are not echoed into the audit log.
    let shown = if super::accounts::check_name(&name).is_ok() {
        name.clone()
    } else {
        "(not an account name)".into()
    };
    let address = from.ip().to_string();
    if let Err(Locked { retry_after_ms }) = st.throttle.check(&name, &address, now_ms()) {
        tracing::warn!(account = %shown, %address, "console login refused: too many failures");
        let mut r =
            login_page(&st, &headers, lang, shown, Some(t.login_locked), StatusCode::TOO_MANY_REQUESTS);
        let secs = (retry_after_ms / 1000).max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let (accounts, n, p) = (st.accounts.clone(), name.clone(), password);
    let role = match tokio::task::spawn_blocking(move || accounts.login(&n, &p)).await {
        Ok(Ok(role)) => role,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "console: the account store failed");
            None
        }
        Err(_) => None,
    };
    let Some((role, stamp)) = role else {
        st.throttle.failed(&name, &address, now_ms());
        let _ =
            record(&st.shared, "console-login-failed", &shown, None, format!("from {address}"), None).await;
        return login_page(&st, &headers, lang, shown, Some(t.login_failed), StatusCode::UNAUTHORIZED);
    };
    st.throttle.succeeded(&name);
    // A login that cannot be audited does not happen.
    if record(&st.shared, "console-login", &name, Some(role), format!("from {address}"), None).await.is_err()
    {
        return harden(
            (StatusCode::INTERNAL_SERVER_ERROR, "the audit log cannot be written; see the gateway's log")
                .into_response(),
        );
    }
    let Some((id, _)) = st.sessions.create(&name, role, &stamp, now_ms()) else {
        return harden((StatusCode::INTERNAL_SERVER_ERROR, "no system randomness").into_response());
    };
    let mut r = redirect("/");
    set_cookie(&mut r, format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict"));
    set_cookie(&mut r, format!("{}=; Path=/login; HttpOnly; SameSite=Strict; Max-Age=0", csrf::LOGIN_COOKIE));
    r
}

async fn logout(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let (cx, _) = match post_ctx(&st, &headers, &uri, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        st.sessions.remove(id);
    }
    let _ =
        record(&st.shared, "console-logout", &cx.session.user, Some(cx.session.role), String::new(), None)
            .await;
    let mut r = redirect("/login");
    set_cookie(&mut r, format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"));
    r
}

async fn css() -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("assets/console.css"))
        .into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    harden(r)
}

async fn js() -> Response {
    let mut r =
        ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("assets/console.js"))
            .into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    harden(r)
}

async fn not_found(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    match ctx(&st, &headers, &uri).await {
        Ok(cx) => {
            let t = cx.t();
            refusal(&st, &cx, StatusCode::NOT_FOUND, t.not_found, uri.path().to_owned())
        }
        Err(r) => r,
    }
}

/// Runs blocking `f` off the async threads; a failure is a message for the page.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("internal error: {e}"))?
}

macro_rules! try_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

async fn overview(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    let t = cx.t();
    let (cert, crls) = views::expiries(&st.shared, time::OffsetDateTime::now_utc());
    let shared = st.shared.clone();
    let summary = blocking(move || views::audit_summary(&shared, now_ms())).await;
    let mut c = chrome(&st, &cx, t.nav_overview, "/");
    let (entries, last, volume) = match summary {
        Ok(s) => (s.entries, s.last_checkpoint, s.volume),
        Err(e) => {
            c.flash = Some(format!("{}: {e}", t.audit_log));
            (0, String::new(), Vec::new())
        }
    };
    let chart = views::volume_chart(t, &volume);
    let p = OverviewPage {
        c,
        cert,
        crls,
        peers: views::peers(&st.shared),
        audit_entries: entries,
        last_checkpoint: last,
        chart,
        volume,
    };
    page(&cx, StatusCode::OK, &p)
}

async fn catalog(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Steward);
    let shared = st.shared.clone();
    let (datasets, problems) = blocking(move || Ok(views::catalog(&shared))).await.unwrap_or_default();
    let c = chrome(&st, &cx, cx.t().nav_catalog, "/catalog");
    page(&cx, StatusCode::OK, &CatalogPage { c, datasets, problems })
}

fn grants_page(
    st: &ConsoleState,
    cx: &Ctx,
    form: ExplainForm,
    result: Option<Result<ExplainView, String>>,
) -> Response {
    let c = chrome(st, cx, cx.t().nav_grants, "/grants");
    let datasets = st.shared.catalog().datasets().iter().map(|d| d.id.to_string()).collect();
    let grants = views::grants(&st.shared, now_s());
    page(cx, StatusCode::OK, &GrantsPage { c, grants, form, result, datasets })
}

async fn grants(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Steward);
    grants_page(&st, &cx, ExplainForm { action: "read".into(), ..ExplainForm::default() }, None)
}

async fn explain(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let (cx, form) = try_page!(post_ctx(&st, &headers, &uri, &body).await);
    require!(&st, &cx, Role::Steward);
    let f = ExplainForm {
        peer: form.text("peer"),
        dataset: form.text("dataset"),
        purpose: form.text("purpose"),
        action: form.text("action"),
    };
    let result = views::explain(&st.shared, &f, now_s());
    grants_page(&st, &cx, f, Some(result))
}

async fn requests_page(st: &ConsoleState, cx: &Ctx, flash: Option<String>, status: StatusCode) -> Response {
    let store = st.shared.requests.clone();
    let held = blocking(move || store.list(None, now_s()).map_err(|e| e.to_string())).await;
    let mut c = chrome(st, cx, cx.t().nav_requests, "/requests");
    let requests = c.or_flash(held.map(|h| views::requests(cx.t(), h)));
    if flash.is_some() {
        c.flash = flash;
    }
    page(cx, status, &RequestsPage { c, requests })
}

async fn requests(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Steward);
    requests_page(&st, &cx, None, StatusCode::OK).await
}

/// The approval form as the JSON body `POST /v1/requests/{id}/approve` takes, so the console
/// goes through the same checks as the API and the CLI.
fn approval_body(form: &Form) -> Result<Vec<u8>, String> {
    let mut o = serde_json::Map::new();
    for key in ["clearance", "days", "quota"] {
        if let Some(v) = form.get(key).map(str::trim).filter(|v| !v.is_empty()) {
            let n: u64 = v.parse().map_err(|_| format!("`{key}` must be a whole number, not {v:?}"))?;
            o.insert(key.into(), n.into());
        }
    }
    if let Some(v) = form.get("rows").map(str::trim).filter(|v| !v.is_empty()) {
        o.insert("rows".into(), v.into());
    }
    serde_json::to_vec(&o).map_err(|e| e.to_string())
}

async fn request_action(
    State(st): State<ConsoleState>,
    UrlPath((id, action)): UrlPath<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (cx, form) = try_page!(post_ctx(&st, &headers, &uri, &body).await);
    require!(&st, &cx, Role::Steward);
    let t = cx.t();
    let outcome = match action.as_str() {
        "approve" => approve(&st, &id, &form).await.map(|_| t.approved_msg),
        "refuse" => crate::api_requests::refuse_request(&st.shared, &id, &form.text("reason"))
            .await
            .map(|_| t.refused_msg)
            .map_err(|e| e.to_string()),
        "revoke" => crate::api_requests::revoke_request(&st.shared, &id, &form.text("reason"))
            .await
            .map(|_| t.revoked_msg)
            .map_err(|e| e.to_string()),
        _ => return refusal(&st, &cx, StatusCode::NOT_FOUND, t.not_found, uri.path().to_owned()),
    };
    match outcome {
        Ok(msg) => {
            let detail = format!("{action} sharing request {id}");
            if let Err(e) = record(
                &st.shared,
                &format!("console-{action}"),
                &cx.session.user,
                Some(cx.session.role),
                detail,
                Some(id),
            )
            .await
            {
                return requests_page(&st, &cx, Some(e), StatusCode::INTERNAL_SERVER_ERROR).await;
            }
            requests_page(&st, &cx, Some(msg.to_owned()), StatusCode::OK).await
        }
        Err(e) => {
            requests_page(&st, &cx, Some(format!("{}: {e}", t.bad_form)), StatusCode::BAD_REQUEST).await
        }
    }
}

async fn approve(st: &ConsoleState, id: &str, form: &Form) -> Result<(), String> {
    crate::api::checked_exchange_id(id.to_owned(), "request").map_err(|e| e.to_string())?;
    let body = approval_body(form)?;
    let (store, rid) = (st.shared.requests.clone(), id.to_owned());
    let now = now_s();
    let held = blocking(move || {
        store.get(&rid, crate::governance::store::Role::Incoming, now).map_err(|e| e.to_string())
    })
    .await?;
    let a = crate::api_requests::parse_approval(&body, &held, now)?;
    crate::api_requests::approve_request(&st.shared, id, a).await.map(drop).map_err(|e| e.to_string())
}

async fn objections_page(st: &ConsoleState, cx: &Ctx, flash: Option<String>, status: StatusCode) -> Response {
    let store = st.shared.objections.clone();
    let held = blocking(move || store.list(None).map_err(|e| e.to_string())).await;
    let mut c = chrome(st, cx, cx.t().nav_objections, "/objections");
    let shared = st.shared.clone();
    let due = move |received| {
        crate::governance::answer_deadline(&shared.calendar, received, shared.cfg.answer_days)
    };
    let objections = c.or_flash(held.map(|h| views::objections(cx.t(), h, due, now_s())));
    if flash.is_some() {
        c.flash = flash;
    }
    page(cx, status, &ObjectionsPage { c, objections })
}

async fn objections(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Steward);
    objections_page(&st, &cx, None, StatusCode::OK).await
}

/// The steward accepts (correcting the record: the value given is written to the source, or
/// the source is checked to have been corrected) or rejects an objection, through the same
/// functions as `POST /v1/objections/{id}/accept|reject` and `fedgate objections`.
async fn objection_action(
    State(st): State<ConsoleState>,
    UrlPath((id, action)): UrlPath<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (cx, form) = try_page!(post_ctx(&st, &headers, &uri, &body).await);
    require!(&st, &cx, Role::Steward);
    let t = cx.t();
    let given = |k: &str| form.get(k).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let checked = crate::api::checked_exchange_id(id.clone(), "objection").map_err(|e| e.to_string());
    let outcome = match (checked, action.as_str()) {
        (Err(e), _) => Err(e),
        (Ok(_), "accept") => {
            let b = crate::api_objections::AcceptBody { value: given("value"), reason: given("reason") };
            match crate::governance::objection::check_reason(b.reason.as_deref(), false) {
                Err(e) => Err(e),
                Ok(()) => crate::api_objections::accept_objection(&st.shared, &id, b)
                    .await
                    .map(|_| t.accepted_msg)
                    .map_err(|e| e.to_string()),
            }
        }
        (Ok(_), "reject") => {
            let reason = form.text("reason").trim().to_owned();
            match crate::governance::objection::check_reason(Some(&reason), true) {
                Err(e) => Err(e),
                Ok(()) => crate::api_objections::reject_objection(&st.shared, &id, reason)
                    .await
                    .map(|_| t.rejected_msg)
                    .map_err(|e| e.to_string()),
            }
        }
        _ => return refusal(&st, &cx, StatusCode::NOT_FOUND, t.not_found, uri.path().to_owned()),
    };
    match outcome {
        Ok(msg) => {
            let detail = format!("{action} objection {id}");
            let decision = format!("console-objection-{action}");
            let who = (&cx.session.user, Some(cx.session.role));
            if let Err(e) = record(&st.shared, &decision, who.0, who.1, detail, Some(id)).await {
                return objections_page(&st, &cx, Some(e), StatusCode::INTERNAL_SERVER_ERROR).await;
            }
            objections_page(&st, &cx, Some(msg.to_owned()), StatusCode::OK).await
        }
        Err(e) => {
            objections_page(&st, &cx, Some(format!("{}: {e}", t.bad_form)), StatusCode::BAD_REQUEST).await
        }
    }
}

async fn subscriptions(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Operator);
    let store = st.shared.subscriptions.clone();
    let held = blocking(move || store.list().map_err(|e| e.to_string())).await;
    let mut c = chrome(&st, &cx, cx.t().nav_subscriptions, "/subscriptions");
    let subscriptions = c.or_flash(held.map(views::subscriptions));
    page(&cx, StatusCode::OK, &SubscriptionsPage { c, subscriptions })
}

async fn referrals_page(st: &ConsoleState, cx: &Ctx, id: Option<String>) -> Response {
    let store = st.shared.referrals.clone();
    let now = now_s();
    let found = blocking(move || {
        let list = store.list(now).map_err(|e| e.to_string())?;
        let detail =
            id.map(|id| views::referral_detail(&store, &id, now)).transpose().map_err(|e| e.to_string())?;
        Ok((views::referrals(&list, now), detail))
    })
    .await;
    let mut c = chrome(st, cx, cx.t().nav_referrals, "/referrals");
    let (referrals, detail) = c.or_flash(found);
    page(cx, StatusCode::OK, &ReferralsPage { c, referrals, detail })
}

async fn referrals(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Operator);
    referrals_page(&st, &cx, None).await
}

async fn referral(
    State(st): State<ConsoleState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Operator);
    referrals_page(&st, &cx, Some(id)).await
}

fn audit_filter(uri: &Uri) -> AuditFilter {
    let pairs: Vec<(String, String)> =
        uri.query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let get =
        |k: &str| pairs.iter().find(|(x, _)| x == k).map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
    AuditFilter {
        kind: get("kind"),
        peer: get("peer"),
        dataset: get("dataset"),
        decision: get("decision"),
        exchange: get("exchange"),
        text: get("text"),
    }
}

async fn audit_page(
    st: &ConsoleState,
    cx: &Ctx,
    filter: AuditFilter,
    verify: Option<Result<String, String>>,
) -> Response {
    let (shared, f) = (st.shared.clone(), filter.clone());
    let found = blocking(move || views::search(&shared, &f, AUDIT_ROWS)).await;
    let mut c = chrome(st, cx, cx.t().nav_audit, "/audit");
    let (entries, matched) = c.or_flash(found);
    page(cx, StatusCode::OK, &AuditPage { c, filter, kinds: views::kinds(), entries, matched, verify })
}

async fn audit_search(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Auditor);
    audit_page(&st, &cx, audit_filter(&uri), None).await
}

async fn audit_verify(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let (cx, _) = try_page!(post_ctx(&st, &headers, &uri, &body).await);
    require!(&st, &cx, Role::Auditor);
    let shared = st.shared.clone();
    let result = blocking(move || views::verify(&shared)).await;
    let detail = match &result {
        Ok(m) => format!("verified the audit log: {m}"),
        Err(e) => format!("verified the audit log: FAILED: {e}"),
    };
    let _ = record(&st.shared, "console-verify", &cx.session.user, Some(cx.session.role), detail, None).await;
    audit_page(&st, &cx, AuditFilter::default(), Some(result)).await
}

async fn audit_entry(
    State(st): State<ConsoleState>,
    UrlPath(seq): UrlPath<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Auditor);
    let t = cx.t();
    let Ok(seq) = seq.parse::<u64>() else {
        return refusal(&st, &cx, StatusCode::NOT_FOUND, t.not_found, format!("entry {seq:?}"));
    };
    let shared = st.shared.clone();
    match blocking(move || views::entry(&shared, seq)).await {
        Ok(Some(fields)) => {
            let c = chrome(&st, &cx, t.details, "/audit");
            page(&cx, StatusCode::OK, &EntryPage { c, seq, fields })
        }
        Ok(None) => refusal(&st, &cx, StatusCode::NOT_FOUND, t.not_found, format!("entry {seq}")),
        Err(e) => refusal(&st, &cx, StatusCode::INTERNAL_SERVER_ERROR, t.audit_log, e),
    }
}

async fn audit_proof(
    State(st): State<ConsoleState>,
    UrlPath(seq): UrlPath<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Auditor);
    let t = cx.t();
    let Ok(seq) = seq.parse::<u64>() else {
        return refusal(&st, &cx, StatusCode::NOT_FOUND, t.not_found, format!("entry {seq:?}"));
    };
    let shared = st.shared.clone();
    match blocking(move || views::proof(&shared, seq)).await {
        Ok(json) => {
            let name = format!("attachment; filename=\"proof-{seq}.json\"");
            let mut r = ([(header::CONTENT_TYPE, "application/json")], json).into_response();
            if let Ok(v) = HeaderValue::from_str(&name) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            harden(r)
        }
        Err(e) => refusal(&st, &cx, StatusCode::NOT_FOUND, t.not_found, e),
    }
}

fn reconcile_page(
    st: &ConsoleState,
    cx: &Ctx,
    status: StatusCode,
    result: Option<Result<ReconcileView, String>>,
) -> Response {
    let c = chrome(st, cx, cx.t().nav_reconcile, "/audit/reconcile");
    let max_mib = super::reconcile::MAX_UPLOAD >> 20;
    page(cx, status, &ReconcilePage { c, max_mib, result })
}

async fn reconcile_form(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    require!(&st, &cx, Role::Auditor);
    reconcile_page(&st, &cx, StatusCode::OK, None)
}

/// Why an upload form was not taken.
enum UploadRefused {
    /// Missing or wrong CSRF token.
    Csrf,
    /// Anything else, said for the page.
    Bad(String),
}

/// An export's files, by name, as uploaded.
type ExportFiles<'a> = Vec<(String, &'a [u8])>;

/// The reconcile form's fields: the export's files and the auditor's secret key; the CSRF
/// token checked first.
fn reconcile_fields<'a>(
    body: &'a [u8],
    content_type: &str,
    csrf_expected: &str,
) -> Result<(ExportFiles<'a>, [u8; 32]), UploadRefused> {
    let bad = |e: super::upload::UploadError| UploadRefused::Bad(e.to_string());
    let parts =
        super::upload::parse(body, super::upload::boundary(content_type).map_err(bad)?).map_err(bad)?;
    let token = parts.iter().find(|p| p.name == csrf::FIELD).and_then(|p| std::str::from_utf8(p.data).ok());
    if !csrf::matches(csrf_expected, token) {
        return Err(UploadRefused::Csrf);
    }
    let key = parts
        .iter()
        .find(|p| p.name == "key" && p.file.is_some())
        .ok_or_else(|| UploadRefused::Bad("no auditor key file in the upload".into()))?;
    let key = std::str::from_utf8(key.data)
        .ok()
        .and_then(fedgate_audit::keys::parse_auditor_secret)
        .ok_or_else(|| {
            UploadRefused::Bad(format!(
                "{:?} is not an auditor secret key (64 hex digits, the .key file of `fedgate audit keygen`)",
                key.file.as_deref().unwrap_or_default()
            ))
        })?;
    let files: Vec<(String, &[u8])> = parts
        .iter()
        .filter(|p| p.name == "export")
        .filter_map(|p| p.file.clone().filter(|f| !f.is_empty()).map(|f| (f, p.data)))
        .collect();
    if files.is_empty() {
        return Err(UploadRefused::Bad("no export file in the upload".into()));
    }
    Ok((files, key))
}

/// Reconciles this node's log with an uploaded peer export (auditor only); the attempt and its
/// outcome are audited, the key never.
async fn reconcile_upload(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Body,
) -> Response {
    let mut cx = try_page!(ctx(&st, &headers, &uri).await);
    cx.here.clear();
    require!(&st, &cx, Role::Auditor);
    let max = super::reconcile::MAX_UPLOAD;
    let too_large = |cx: &Ctx, why: String| {
        let msg = format!(
            "{why}: at most {} MiB; reconcile larger exports with `fedgate audit reconcile`",
            max >> 20
        );
        reconcile_page(&st, cx, StatusCode::PAYLOAD_TOO_LARGE, Some(Err(msg)))
    };
    // A declared length over the bound is refused before anything is read.
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large(&cx, format!("the upload is {} bytes", declared.unwrap_or_default()));
    }
    let body = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(e) => return too_large(&cx, format!("the upload was not read ({e})")),
    };
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (shared, expected) = (st.shared.clone(), cx.session.csrf.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let (files, key) = reconcile_fields(&body, &content_type, &expected)?;
        super::reconcile::run(&shared, &files, key).map_err(UploadRefused::Bad)
    })
    .await
    .unwrap_or_else(|e| Err(UploadRefused::Bad(format!("internal error: {e}"))));
    let own = st.shared.cfg.node.to_string();
    let (status, result, detail) = match outcome {
        Err(UploadRefused::Csrf) => {
            let t = cx.t();
            return refusal(
                &st,
                &cx,
                StatusCode::FORBIDDEN,
                t.forbidden,
                "missing or wrong CSRF token".into(),
            );
        }
        Err(UploadRefused::Bad(e)) => (
            StatusCode::BAD_REQUEST,
            Err(e.clone()),
            format!("reconciliation with an uploaded export failed: {e}"),
        ),
        Ok((peer, report)) => {
            let v = views::reconcile_view(&own, peer, &report);
            let detail = format!(
                "reconciled with {}'s uploaded export: {} exchange(s) between the two, {} disagree; {} witnessed checkpoint(s) checked, {} inconsistent: {}",
                v.peer,
                v.rows.len(),
                v.rows.iter().filter(|r| !r.disagreements.is_empty()).count(),
                v.checked,
                v.inconsistent.len(),
                if v.reconciled { "reconciled" } else { "NOT reconciled" }
            );
            (StatusCode::OK, Ok(v), detail)
        }
    };
    let who = (&cx.session.user, Some(cx.session.role));
    if let Err(e) = record(&st.shared, "console-reconcile", who.0, who.1, detail, None).await {
        return reconcile_page(&st, &cx, StatusCode::INTERNAL_SERVER_ERROR, Some(Err(e)));
    }
    reconcile_page(&st, &cx, status, Some(result))
}

/// How often account changes made by `fedgate user` are looked for.
const CHANGES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Moves account changes (`fedgate user add|passwd|remove`, a password changed in the console)
/// into the node's audit log, oldest first, each marked done once it is written. Runs until
/// aborted.
pub async fn audit_account_changes(st: ConsoleState) {
    let mut tick = tokio::time::interval(CHANGES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let accounts = st.accounts.clone();
        let pending = match tokio::task::spawn_blocking(move || accounts.pending()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "console: account changes cannot be read");
                continue;
            }
            Err(_) => continue,
        };
        // Sessions of a changed or removed account need nothing here: each request checks the
        // account's password stamp, so they end at their next click (and a session opened
        // with the new password in the meantime stays).
        for c in pending {
            let what = match c.action.as_str() {
                "add" => "account added",
                "passwd" => "password changed; its sessions ended",
                _ => "account removed; its sessions ended",
            };
            let detail = format!("{what} (by {}, at {})", c.via, views::when(c.at));
            let role = Role::parse(&c.role);
            let decision = format!("account-{}", c.action);
            // Written before it is marked done: a crash in between writes it twice, never not.
            if record(&st.shared, &decision, &c.name, role, detail, None).await.is_err() {
                break;
            }
            let (accounts, seq) = (st.accounts.clone(), c.seq);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || accounts.done(seq)).await {
                tracing::error!(error = %e, "console: an account change cannot be marked audited");
                break;
            }
        }
    }
}

async fn password_form(State(st): State<ConsoleState>, headers: HeaderMap, uri: Uri) -> Response {
    let cx = try_page!(ctx(&st, &headers, &uri).await);
    let c = chrome(&st, &cx, cx.t().change_password, "/password");
    page(&cx, StatusCode::OK, &PasswordPage { c, error: None })
}

/// Any account changes its own password: the current one checked (a wrong one counts as a
/// failed login), the new one twice; then every session of the account ends, this one too.
async fn password_change(
    State(st): State<ConsoleState>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (cx, form) = try_page!(post_ctx(&st, &headers, &uri, &body).await);
    let t = cx.t();
    let fail = |cx: &Ctx, status, error: String| {
        let c = chrome(&st, cx, t.change_password, "/password");
        page(cx, status, &PasswordPage { c, error: Some(error) })
    };
    let (current, new) = (form.text("current"), form.text("new"));
    if new != form.text("repeat") {
        return fail(&cx, StatusCode::BAD_REQUEST, t.password_mismatch.into());
    }
    let (name, address) = (cx.session.user.clone(), from.ip().to_string());
    if let Err(Locked { .. }) = st.throttle.check(&name, &address, now_ms()) {
        return fail(&cx, StatusCode::TOO_MANY_REQUESTS, t.login_locked.into());
    }
    let (accounts, n) = (st.accounts.clone(), name.clone());
    let changed = tokio::task::spawn_blocking(move || match accounts.verify(&n, &current)? {
        Some(_) => accounts.passwd_via(&n, &new, now_s(), super::accounts::VIA_CONSOLE).map(|()| true),
        None => Ok(false),
    })
    .await;
    match changed {
        Ok(Ok(true)) => {
            st.sessions.remove_user(&name);
            redirect("/login")
        }
        Ok(Ok(false)) => {
            st.throttle.failed(&name, &address, now_ms());
            fail(&cx, StatusCode::FORBIDDEN, t.password_wrong.into())
        }
        Ok(Err(e)) => fail(&cx, StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => fail(&cx, StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}")),
    }
}
