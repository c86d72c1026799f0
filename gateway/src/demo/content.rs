//! The demo federation's catalogs and grants, as a steward would write them.

/// (owner node, dataset id, region its records cover, catalog TOML).
pub(super) const DATASETS: &[(&str, &str, &str, &str)] = &[
    ("hotline12345@wuxi", "hotline-tickets", "wuxi", HOTLINE),
    ("petition@wuxi", "petitions", "wuxi", PETITIONS),
    ("womens-federation@wuxi", "family-disputes", "wuxi", FAMILY),
    ("womens-federation@wuxi", "shelter-referrals", "wuxi", SHELTER),
    ("police@wuxi.liangxi", "police-incidents", "wuxi.liangxi", POLICE),
    ("court@wuxi.xinwu", "court-mediation-cases", "wuxi.xinwu", COURT),
    ("grid@wuxi.liangxi.chongan", "grid-events", "wuxi.liangxi.chongan", GRID),
];

const HOTLINE: &str = r#"
[[dataset]]
id = "hotline-tickets"
title = "12345 热线工单 / 12345 hotline tickets"
description = "Calls and online requests to the 12345 citizen hotline, one row per ticket."
owner = "hotline12345@wuxi"
steward = "市12345热线数据科 0510-12345000"
update = "realtime"
sharing = "conditional"
classification = "case.detail"
jurisdiction = "region"
primary_key = "ticket_id"
keywords = ["12345", "投诉", "纠纷"]

  [[dataset.fields]]
  name = "ticket_id"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "region"
  type = "region"
  grade = 1
  [[dataset.fields]]
  name = "caller_name"
  type = "string"
  grade = 3
  pii = "person-name"
  [[dataset.fields]]
  name = "caller_id"
  type = "string"
  grade = 4
  pii = "resident-id"
  nullable = true
  [[dataset.fields]]
  name = "caller_mobile"
  type = "string"
  grade = 3
  pii = "mobile"
  [[dataset.fields]]
  name = "address"
  type = "string"
  grade = 3
  pii = "address"
  [[dataset.fields]]
  name = "received_at"
  type = "datetime"
  grade = 2
  rule = { op = "generalize", to = "month" }
  [[dataset.fields]]
  name = "category"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "content"
  type = "string"
  grade = 3
  pii = "free-text"
  [[dataset.fields]]
  name = "status"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "handler"
  type = "string"
  grade = 2
  pii = "person-name"
  [[dataset.fields]]
  name = "urgency"
  type = "integer"
  grade = 1
  [[dataset.fields]]
  name = "channel"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "closed"
  type = "bool"
  grade = 1
"#;

const PETITIONS: &str = r#"
[[dataset]]
id = "petitions"
title = "信访件 / Petitions"
owner = "petition@wuxi"
steward = "市信访局信息处"
update = "daily"
sharing = "conditional"
classification = "case.detail"
jurisdiction = "region"
primary_key = "petition_id"

  [[dataset.fields]]
  name = "petition_id"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "region"
  type = "region"
  grade = 1
  [[dataset.fields]]
  name = "petitioner_name"
  type = "string"
  grade = 3
  pii = "person-name"
  [[dataset.fields]]
  name = "petitioner_id"
  type = "string"
  grade = 4
  pii = "resident-id"
  rule = "hash"
  [[dataset.fields]]
  name = "mobile"
  type = "string"
  grade = 3
  pii = "mobile"
  [[dataset.fields]]
  name = "filed_on"
  type = "date"
  grade = 2
  rule = { op = "generalize", to = "month" }
  [[dataset.fields]]
  name = "subject"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "summary"
  type = "string"
  grade = 3
  pii = "free-text"
  [[dataset.fields]]
  name = "is_collective"
  type = "bool"
  grade = 2
  rule = "redact"
  [[dataset.fields]]
  name = "status"
  type = "string"
  grade = 1
"#;

const FAMILY: &str = r#"
[[dataset]]
id = "family-disputes"
title = "婚姻家庭纠纷 / Family disputes"
owner = "womens-federation@wuxi"
steward = "市妇联权益部"
update = "daily"
sharing = "conditional"
classification = "case.detail"
jurisdiction = "region"
primary_key = "case_id"

  [[dataset.fields]]
  name = "case_id"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "region"
  type = "region"
  grade = 1
  [[dataset.fields]]
  name = "applicant_name"
  type = "string"
  grade = 3
  pii = "person-name"
  [[dataset.fields]]
  name = "applicant_id"
  type = "string"
  grade = 4
  pii = "resident-id"
  rule = "pseudonym"
  [[dataset.fields]]
  name = "respondent_name"
  type = "string"
  grade = 3
  pii = "person-name"
  [[dataset.fields]]
  name = "applicant_mobile"
  type = "string"
  grade = 3
  pii = "mobile"
  [[dataset.fields]]
  name = "applicant_age"
  type = "integer"
  grade = 3
  rule = { op = "generalize", to = "age-band", width = 10 }
  [[dataset.fields]]
  name = "dispute_type"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "description"
  type = "string"
  grade = 4
  pii = "free-text"
  [[dataset.fields]]
  name = "reported_on"
  type = "date"
  grade = 2
  rule = { op = "generalize", to = "month" }
  [[dataset.fields]]
  name = "has_minor_children"
  type = "bool"
  grade = 3
  rule = "drop"
"#;

const SHELTER: &str = r#"
[[dataset]]
id = "shelter-referrals"
title = "庇护转介 / Shelter referrals"
description = "Where people at risk were placed. Never shared."
owner = "womens-federation@wuxi"
steward = "市妇联权益部"
update = "on-demand"
sharing = "none"
classification = "personal.location"
jurisdiction = "region"
primary_key = "referral_id"

  [[dataset.fields]]
  name = "referral_id"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "region"
  type = "region"
  grade = 1
  [[dataset.fields]]
  name = "person_name"
  type = "string"
  grade = 4
  pii = "person-name"
  [[dataset.fields]]
  name = "shelter_address"
  type = "string"
  grade = 4
  pii = "address"
"#;

const POLICE: &str = r#"
[[dataset]]
id = "police-incidents"
title = "警情 / Police incidents"
owner = "police@wuxi.liangxi"
steward = "梁溪分局指挥中心"
update = "hourly"
sharing = "conditional"
classification = "case.detail"
jurisdiction = "region"
primary_key = "incident_id"

  [[dataset.fields]]
  name = "incident_id"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "region"
  type = "region"
  grade = 1
  [[dataset.fields]]
  name = "reporter_name"
  type = "string"
  grade = 3
  pii = "person-name"
  [[dataset.fields]]
  name = "reporter_mobile"
  type = "string"
  grade = 3
  pii = "mobile"
  [[dataset.fields]]
  name = "location"
  type = "string"
  grade = 3
  pii = "address"
  [[dataset.fields]]
  name = "occurred_at"
  type = "datetime"
  grade = 2
  rule = { op = "generalize", to = "month" }
  [[dataset.fields]]
  name = "incident_type"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "summary"
  type = "string"
  grade = 3
  pii = "free-text"
  [[dataset.fields]]
  name = "involves_violence"
  type = "bool"
  grade = 3
  rule = "redact"
"#;

const COURT: &str = r#"
[[dataset]]
id = "court-mediation-cases"
title = "诉前调解案件 / Pre-litigation mediation cases"
owner = "court@wuxi.xinwu"
steward = "新吴区法院立案庭"
update = "weekly"
sharing = "unconditional"
open = "conditional"
classification = "case.detail"
jurisdiction = "region"
primary_key = "case_no"

  [[dataset.fields]]
  name = "case_no"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "region"
  type = "region"
  grade = 1
  [[dataset.fields]]
  name = "party_a"
  type = "string"
  grade = 2
  pii = "person-name"
  [[dataset.fields]]
  name = "party_b"
  type = "string"
  grade = 2
  pii = "person-name"
  [[dataset.fields]]
  name = "cause"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "filed_on"
  type = "date"
  grade = 1
  [[dataset.fields]]
  name = "outcome"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "amount"
  type = "decimal"
  grade = 2
  rule = "redact"
"#;

const GRID: &str = r#"
[[dataset]]
id = "grid-events"
title = "网格事件 / Grid events"
owner = "grid@wuxi.liangxi.chongan"
steward = "崇安寺街道网格中心"
update = "realtime"
sharing = "conditional"
classification = "case.detail"
jurisdiction = "region"
primary_key = "event_id"

  [[dataset.fields]]
  name = "event_id"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "region"
  type = "region"
  grade = 1
  [[dataset.fields]]
  name = "reporter_name"
  type = "string"
  grade = 3
  pii = "person-name"
  [[dataset.fields]]
  name = "reporter_mobile"
  type = "string"
  grade = 3
  pii = "mobile"
  [[dataset.fields]]
  name = "category"
  type = "string"
  grade = 1
  [[dataset.fields]]
  name = "description"
  type = "string"
  grade = 3
  pii = "free-text"
  [[dataset.fields]]
  name = "reported_at"
  type = "datetime"
  grade = 2
  rule = { op = "generalize", to = "month" }
  [[dataset.fields]]
  name = "resolved"
  type = "bool"
  grade = 1
"#;

/// Grants by provider node.
pub(super) const GRANTS: &[(&str, &str)] = &[
    (
        "hotline12345@wuxi",
        r#"
[[grant]]
id = "centre-hotline-full"
to = "mediation-center@wuxi"
datasets = ["hotline-tickets"]
purposes = ["dispute-mediation", "risk-assessment"]
clearance = 4
rows = "all"

[[grant]]
id = "police-hotline"
to = { department = "police" }
datasets = ["hotline-tickets"]
purposes = ["dispute-mediation", "law-enforcement"]
clearance = 2

[[grant]]
id = "grassroots-hotline"
to = { levels = [3, 4] }
datasets = ["hotline-tickets"]
purposes = ["dispute-mediation"]
clearance = 2
quota = 5000
"#,
    ),
    (
        "petition@wuxi",
        r#"
[[grant]]
id = "centre-petitions"
to = "mediation-center@wuxi"
datasets = ["petitions"]
purposes = ["dispute-mediation", "risk-assessment"]
clearance = 3
rows = "all"

[[grant]]
id = "court-petitions"
to = { department = "court" }
datasets = ["petitions"]
purposes = ["dispute-mediation"]
clearance = 3
"#,
    ),
    (
        "womens-federation@wuxi",
        r#"
[[grant]]
id = "centre-family"
to = "mediation-center@wuxi"
datasets = ["family-disputes"]
purposes = ["dispute-mediation"]
clearance = 4
rows = "all"

[[grant]]
id = "community-mediators-family"
to = { department = "mediation", levels = [3, 4] }
datasets = ["family-disputes"]
purposes = ["dispute-mediation"]
clearance = 2
quota = 200

[[grant]]
id = "police-family"
to = { department = "police" }
datasets = ["family-disputes"]
purposes = ["law-enforcement"]
clearance = 3
"#,
    ),
    (
        "police@wuxi.liangxi",
        r#"
[[grant]]
id = "centre-incidents"
to = "mediation-center@wuxi"
datasets = ["police-incidents"]
purposes = ["dispute-mediation", "risk-assessment"]
clearance = 3
rows = "all"

[[grant]]
id = "liangxi-grid-incidents"
to = { department = "grid", region = "wuxi.liangxi" }
datasets = ["police-incidents"]
purposes = ["dispute-mediation"]
clearance = 2
"#,
    ),
    (
        "grid@wuxi.liangxi.chongan",
        r#"
[[grant]]
id = "liangxi-grid-events"
to = { region = "wuxi.liangxi" }
datasets = ["grid-events"]
purposes = ["dispute-mediation"]
clearance = 2
rows = "wuxi.liangxi"

[[grant]]
id = "centre-grid-events"
to = "mediation-center@wuxi"
datasets = ["grid-events"]
purposes = ["dispute-mediation", "statistics"]
clearance = 3
rows = "all"
"#,
    ),
];
