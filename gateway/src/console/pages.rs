//! The console's pages: one askama template struct each, and the functions that fill them
//! from the node's state. Templates live in `gateway/templates/console/`; askama escapes every
//! value for HTML, so names and free text (Chinese included) are shown as written, never run.

use askama::Template;

use super::accounts::Role;
use super::i18n::{Lang, Text};

/// One navigation link.
pub struct NavItem {
    /// Where it goes.
    pub href: &'static str,
    /// What it says.
    pub label: &'static str,
    /// It is the page shown.
    pub current: bool,
}

/// What every page around its content shows: the node, the account, the menu, the language.
pub struct Chrome {
    /// The strings.
    pub t: &'static Text,
    /// The language shown.
    pub lang: Lang,
    /// This node's id.
    pub node: String,
    /// The account, if logged in.
    pub user: String,
    /// Its role's name in the page's language.
    pub role: &'static str,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// The links this role may follow.
    pub nav: Vec<NavItem>,
    /// The page's title.
    pub title: &'static str,
    /// A message after an action.
    pub flash: Option<String>,
    /// The page the language link reloads (after a POST, the page the action belongs to).
    pub here: String,
}

impl Chrome {
    /// A page's content read from a store, or nothing with the store's error as the page's
    /// message.
    pub fn or_flash<T: Default>(&mut self, read: Result<T, String>) -> T {
        read.unwrap_or_else(|e| {
            self.flash = Some(e);
            T::default()
        })
    }

    /// A role's name in `t`.
    pub fn role_name(t: &'static Text, role: Role) -> &'static str {
        match role {
            Role::Steward => t.role_steward,
            Role::Operator => t.role_operator,
            Role::Auditor => t.role_auditor,
        }
    }

    /// The menu for `role` with `current` marked: the overview for everyone, then the role's
    /// own pages (the server refuses the others whatever the menu shows).
    pub fn nav(t: &'static Text, role: Role, current: &str) -> Vec<NavItem> {
        let mut items = vec![("/", t.nav_overview)];
        match role {
            Role::Steward => items.extend([
                ("/catalog", t.nav_catalog),
                ("/grants", t.nav_grants),
                ("/requests", t.nav_requests),
                ("/objections", t.nav_objections),
            ]),
            Role::Operator => {
                items.extend([("/subscriptions", t.nav_subscriptions), ("/referrals", t.nav_referrals)])
            }
            Role::Auditor => items.extend([("/audit", t.nav_audit), ("/audit/reconcile", t.nav_reconcile)]),
        }
        items.into_iter().map(|(href, label)| NavItem { href, label, current: href == current }).collect()
    }
}

/// The login form.
#[derive(Template)]
#[template(path = "console/login.html")]
pub struct LoginPage {
    /// Strings.
    pub t: &'static Text,
    /// This node.
    pub node: String,
    /// The login form's CSRF token (also in its cookie).
    pub csrf: String,
    /// The name typed, kept after a failure.
    pub name: String,
    /// Why the last attempt failed.
    pub error: Option<&'static str>,
}

/// A refusal or a missing page.
#[derive(Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    /// Around it.
    pub c: Chrome,
    /// The heading.
    pub heading: &'static str,
    /// The explanation.
    pub message: String,
}

/// A certificate or CRL line of the overview.
pub struct ExpiryRow {
    /// The file.
    pub file: String,
    /// When it runs out (date), or why it cannot be read.
    pub when: String,
    /// Whole days left (negative: past).
    pub days: i64,
    /// Soon or past: highlighted.
    pub warn: bool,
}

/// A peer line of the overview.
pub struct PeerRow {
    /// Its node id.
    pub node: String,
    /// Where it is dialled.
    pub address: String,
    /// A connection is open now.
    pub up: bool,
    /// Last connection made, or empty.
    pub last_ok: String,
    /// Last failed dial and why, or empty.
    pub last_failure: String,
}

/// One row of the volume table under the chart.
pub struct VolumeRow {
    /// The peer.
    pub peer: String,
    /// The dataset.
    pub dataset: String,
    /// Records sent.
    pub sent: u64,
    /// Records received.
    pub received: u64,
}

/// The overview.
#[derive(Template)]
#[template(path = "console/overview.html")]
pub struct OverviewPage {
    /// Around it.
    pub c: Chrome,
    /// The node certificate's expiry.
    pub cert: Vec<ExpiryRow>,
    /// Each CRL's next update.
    pub crls: Vec<ExpiryRow>,
    /// Configured and directory peers.
    pub peers: Vec<PeerRow>,
    /// Entries in the audit log.
    pub audit_entries: u64,
    /// The last checkpoint: entries covered, or empty.
    pub last_checkpoint: String,
    /// The chart (SVG markup built by [`super::chart::svg`], its text escaped there).
    pub chart: String,
    /// The chart's numbers.
    pub volume: Vec<VolumeRow>,
}

/// One field of a dataset.
pub struct FieldRow {
    /// Name.
    pub name: String,
    /// Type.
    pub ty: String,
    /// Grade 1..4.
    pub grade: String,
    /// Classification.
    pub classification: String,
    /// PII kind, or empty.
    pub pii: String,
}

/// One dataset.
pub struct DatasetRow {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Steward.
    pub steward: String,
    /// Grade.
    pub grade: String,
    /// Classification.
    pub classification: String,
    /// Sharing type.
    pub sharing: String,
    /// Update frequency.
    pub update: String,
    /// Fields.
    pub fields: Vec<FieldRow>,
}

/// The catalog.
#[derive(Template)]
#[template(path = "console/catalog.html")]
pub struct CatalogPage {
    /// Around it.
    pub c: Chrome,
    /// The datasets in force.
    pub datasets: Vec<DatasetRow>,
    /// Problems in the files on disk, `FILE:LINE:COL: message` each.
    pub problems: Vec<String>,
}

/// One grant.
pub struct GrantRow {
    /// Id.
    pub id: String,
    /// Who.
    pub to: String,
    /// Datasets, or "*".
    pub datasets: String,
    /// Actions.
    pub actions: String,
    /// Purposes.
    pub purposes: String,
    /// Clearance.
    pub clearance: String,
    /// Rows.
    pub rows: String,
    /// End, or empty.
    pub until: String,
    /// Quota, or empty.
    pub quota: String,
    /// File.
    pub source: String,
    /// Not in force now (expired or not yet valid).
    pub inactive: bool,
}

/// The explain form's values.
#[derive(Default)]
pub struct ExplainForm {
    /// Peer node id.
    pub peer: String,
    /// Dataset id.
    pub dataset: String,
    /// Purpose.
    pub purpose: String,
    /// `read`, `subscribe` or `refer`.
    pub action: String,
}

/// An explain result.
pub struct ExplainView {
    /// Allowed.
    pub allow: bool,
    /// Why.
    pub reason: String,
    /// The grant that allows it.
    pub grant: String,
    /// Terms: clearance, rows, quota.
    pub terms: String,
    /// Field and its obligation.
    pub fields: Vec<(String, String)>,
    /// Grants that almost matched, with what missed.
    pub near: Vec<String>,
}

/// Grants and explain.
#[derive(Template)]
#[template(path = "console/grants.html")]
pub struct GrantsPage {
    /// Around it.
    pub c: Chrome,
    /// The grants in force.
    pub grants: Vec<GrantRow>,
    /// The form as filled.
    pub form: ExplainForm,
    /// Its result, or why it could not be run.
    pub result: Option<Result<ExplainView, String>>,
    /// Dataset ids for the form.
    pub datasets: Vec<String>,
}

/// A sharing request.
pub struct RequestRow {
    /// Id.
    pub id: String,
    /// Incoming or outgoing, in words.
    pub direction: &'static str,
    /// Incoming (the steward answers these).
    pub incoming: bool,
    /// The consumer or provider.
    pub peer: String,
    /// Dataset.
    pub dataset: String,
    /// Purpose.
    pub purpose: String,
    /// Fields asked.
    pub fields: String,
    /// Why.
    pub reason: String,
    /// When received.
    pub created: String,
    /// Answer due.
    pub deadline: String,
    /// Past due and unanswered.
    pub overdue: bool,
    /// State name.
    pub state: String,
    /// Can be approved or refused now.
    pub pending: bool,
    /// Can be revoked now.
    pub approved: bool,
    /// Suggested clearance.
    pub clearance: u8,
    /// The steward's reason or the grant written.
    pub answer: String,
}

/// The requests inbox.
#[derive(Template)]
#[template(path = "console/requests.html")]
pub struct RequestsPage {
    /// Around it.
    pub c: Chrome,
    /// Overdue first, then pending, then the rest, newest first.
    pub requests: Vec<RequestRow>,
}

/// A subscription.
pub struct SubscriptionRow {
    /// Id.
    pub id: String,
    /// Provider.
    pub peer: String,
    /// Dataset.
    pub dataset: String,
    /// Purpose.
    pub purpose: String,
    /// State.
    pub state: String,
    /// Why it stopped.
    pub reason: String,
    /// Stopped: highlighted.
    pub stopped: bool,
    /// Last event received.
    pub cursor: u64,
    /// Last event acknowledged.
    pub delivered: u64,
    /// Created.
    pub created: String,
}

/// Subscriptions.
#[derive(Template)]
#[template(path = "console/subscriptions.html")]
pub struct SubscriptionsPage {
    /// Around it.
    pub c: Chrome,
    /// This node's subscriptions.
    pub subscriptions: Vec<SubscriptionRow>,
}

/// A referral.
pub struct ReferralRow {
    /// Id.
    pub id: String,
    /// Our part.
    pub party: String,
    /// The other end.
    pub peer: String,
    /// Reference.
    pub reference: String,
    /// Subject.
    pub subject: String,
    /// State.
    pub state: String,
    /// Deadline.
    pub deadline: String,
    /// Past deadline and unresolved.
    pub overdue: bool,
    /// Last step.
    pub updated: String,
}

/// A step of a referral.
pub struct StepRow {
    /// Seq.
    pub seq: u64,
    /// Who.
    pub author: String,
    /// When.
    pub at: String,
    /// Step name.
    pub step: String,
    /// State after it.
    pub state: String,
}

/// One referral in detail: its chain and steps.
pub struct ReferralDetail {
    /// Itself.
    pub referral: ReferralRow,
    /// The referrals it was forwarded from, outermost first.
    pub parents: Vec<ReferralRow>,
    /// Those it was forwarded to.
    pub children: Vec<ReferralRow>,
    /// Its steps.
    pub steps: Vec<StepRow>,
}

/// Referrals.
#[derive(Template)]
#[template(path = "console/referrals.html")]
pub struct ReferralsPage {
    /// Around it.
    pub c: Chrome,
    /// Overdue first.
    pub referrals: Vec<ReferralRow>,
    /// The one asked for.
    pub detail: Option<ReferralDetail>,
}

/// An audit entry in the search list.
pub struct EntryRow {
    /// Seq.
    pub seq: u64,
    /// Time.
    pub time: String,
    /// Kind.
    pub kind: String,
    /// Exchange id prefix.
    pub exchange: String,
    /// Counterpart.
    pub counterpart: String,
    /// Dataset.
    pub dataset: String,
    /// Purpose.
    pub purpose: String,
    /// Decision.
    pub decision: String,
    /// Records.
    pub records: String,
    /// Reason or detail, shortened.
    pub note: String,
}

/// The audit search form as filled.
#[derive(Default, Clone)]
pub struct AuditFilter {
    /// Kind name.
    pub kind: String,
    /// Counterpart.
    pub peer: String,
    /// Dataset.
    pub dataset: String,
    /// Decision.
    pub decision: String,
    /// Exchange id prefix.
    pub exchange: String,
    /// Text anywhere in the entry.
    pub text: String,
}

/// The audit page.
#[derive(Template)]
#[template(path = "console/audit.html")]
pub struct AuditPage {
    /// Around it.
    pub c: Chrome,
    /// The form.
    pub filter: AuditFilter,
    /// Kinds for the form.
    pub kinds: Vec<&'static str>,
    /// Matching entries, newest first, at most [`super::server::AUDIT_ROWS`].
    pub entries: Vec<EntryRow>,
    /// Entries that matched in all.
    pub matched: u64,
    /// The result of "verify", if asked.
    pub verify: Option<Result<String, String>>,
}

/// One audit entry in full.
#[derive(Template)]
#[template(path = "console/entry.html")]
pub struct EntryPage {
    /// Around it.
    pub c: Chrome,
    /// Seq.
    pub seq: u64,
    /// Every field that is set, name and value.
    pub fields: Vec<(String, String)>,
}

/// An objection to a record (数据异议).
pub struct ObjectionRow {
    /// Id (its exchange id).
    pub id: String,
    /// Incoming or outgoing, in words.
    pub direction: &'static str,
    /// Incoming: this node's record, its steward decides.
    pub incoming: bool,
    /// The objector or the provider.
    pub peer: String,
    /// Dataset.
    pub dataset: String,
    /// Purpose the objector receives the record for.
    pub purpose: String,
    /// The record's primary key.
    pub key: String,
    /// The field objected to.
    pub field: String,
    /// Why it is held wrong.
    pub reason: String,
    /// The value the objector proposed, or empty.
    pub proposed: String,
    /// When received or filed.
    pub created: String,
    /// When the answer is due (incoming, open), or empty.
    pub deadline: String,
    /// Open and past due.
    pub overdue: bool,
    /// State name.
    pub state: String,
    /// Still open: can be decided.
    pub open: bool,
    /// The steward's answer: reason or note, and whether the record was corrected.
    pub answer: String,
}

/// The objections inbox.
#[derive(Template)]
#[template(path = "console/objections.html")]
pub struct ObjectionsPage {
    /// Around it.
    pub c: Chrome,
    /// Overdue first, then open, then the rest, newest first.
    pub objections: Vec<ObjectionRow>,
}

/// One exchange of a reconciliation.
pub struct ReconcileRow {
    /// Exchange id (shortened), with the batch or step if any.
    pub exchange: String,
    /// The provider.
    pub provider: String,
    /// The consumer.
    pub consumer: String,
    /// The dataset.
    pub dataset: String,
    /// What the provider's log says.
    pub provider_says: String,
    /// What the consumer's log says.
    pub consumer_says: String,
    /// What disagrees; empty when both agree.
    pub disagreements: String,
}

/// A reconciliation's outcome.
pub struct ReconcileView {
    /// The peer whose export was uploaded.
    pub peer: String,
    /// Nothing between the two disagrees and every witnessed checkpoint holds.
    pub reconciled: bool,
    /// The exchanges between the two nodes, disagreements first.
    pub rows: Vec<ReconcileRow>,
    /// Exchanges with nodes whose log was not given (not judged).
    pub one_sided: usize,
    /// Witnessed checkpoints checked.
    pub checked: usize,
    /// Witnessed checkpoints a log contradicts, each said in full.
    pub inconsistent: Vec<String>,
}

/// The reconcile form and its outcome.
#[derive(Template)]
#[template(path = "console/reconcile.html")]
pub struct ReconcilePage {
    /// Around it.
    pub c: Chrome,
    /// The largest upload, in MiB.
    pub max_mib: usize,
    /// The outcome, or why there is none.
    pub result: Option<Result<ReconcileView, String>>,
}

/// Changing one's own password.
#[derive(Template)]
#[template(path = "console/password.html")]
pub struct PasswordPage {
    /// Around it.
    pub c: Chrome,
    /// Why the last attempt failed.
    pub error: Option<String>,
}
