//! Synthetic grants, catalogs and records shared by the policy benchmarks.
#![allow(dead_code, unreachable_pub)]

use fedgate_catalog::{Catalog, NodeId, Record, Value};
use fedgate_policy::{parse_grants, Action, Policy, Request};

pub const DEPTS: &[&str] =
    &["police", "court", "grid", "mediation", "petition", "civil-affairs", "justice", "hotline"];
pub const PURPOSES: &[&str] = &["dispute-mediation", "risk-assessment", "statistics", "law-enforcement"];

pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[(self.next_u64() % xs.len() as u64) as usize]
    }
}

pub fn region(r: &mut Rng) -> String {
    let levels = 1 + r.next_u64() % 4;
    let mut parts = vec!["wuxi".to_owned()];
    for l in 1..levels {
        parts.push(format!("r{}x{}", l, r.next_u64() % 12));
    }
    parts.join(".")
}

pub fn node(r: &mut Rng) -> NodeId {
    format!("{}@{}", r.pick(DEPTS), region(r)).parse().unwrap()
}

pub const DATASETS: usize = 50;

pub fn catalog() -> Catalog {
    let mut text = String::new();
    for i in 0..DATASETS {
        text.push_str(&format!(
            "[[dataset]]\nid = \"ds-{i}\"\ntitle = \"t\"\nowner = \"w@wuxi\"\nsteward = \"s\"\nupdate = \"daily\"\nsharing = \"conditional\"\nclassification = \"case.detail\"\njurisdiction = \"region\"\nprimary_key = \"id\"\n{}",
            FIELDS
        ));
    }
    fedgate_catalog::parse("bench.toml", &text).unwrap()
}

/// 14 fields: 5 masked below clearance 3 (name, id, mobile, address, free text), rest clear.
pub const FIELDS: &str = r#"
[[dataset.fields]]
name = "id"
type = "string"
grade = 1
[[dataset.fields]]
name = "region"
type = "region"
grade = 1
[[dataset.fields]]
name = "name"
type = "string"
grade = 3
pii = "person-name"
[[dataset.fields]]
name = "resident_id"
type = "string"
grade = 4
pii = "resident-id"
[[dataset.fields]]
name = "mobile"
type = "string"
grade = 3
pii = "mobile"
[[dataset.fields]]
name = "address"
type = "string"
grade = 3
pii = "address"
[[dataset.fields]]
name = "content"
type = "string"
grade = 3
pii = "free-text"
[[dataset.fields]]
name = "category"
type = "string"
grade = 1
[[dataset.fields]]
name = "status"
type = "string"
grade = 1
[[dataset.fields]]
name = "received"
type = "date"
grade = 2
[[dataset.fields]]
name = "channel"
type = "string"
grade = 1
[[dataset.fields]]
name = "handler"
type = "string"
grade = 2
[[dataset.fields]]
name = "priority"
type = "integer"
grade = 1
[[dataset.fields]]
name = "closed"
type = "bool"
grade = 1
"#;

/// `n` grants over varied subjects, datasets and purposes.
pub fn policy(n: usize) -> Policy {
    let mut r = Rng(42 + n as u64);
    let mut text = String::new();
    for i in 0..n {
        let to = match r.next_u64() % 4 {
            0 => format!("\"{}\"", node(&mut r)),
            1 => format!("{{ department = \"{}\" }}", r.pick(DEPTS)),
            2 => format!("{{ region = \"{}\" }}", region(&mut r)),
            _ => format!("{{ department = \"{}\", levels = [2, 3] }}", r.pick(DEPTS)),
        };
        text.push_str(&format!(
            "[[grant]]\nid = \"g{i}\"\nto = {to}\ndatasets = [\"ds-{}\"]\npurposes = [\"{}\"]\nclearance = {}\n\n",
            r.next_u64() % DATASETS as u64,
            r.pick(PURPOSES),
            1 + r.next_u64() % 4
        ));
    }
    Policy::new(parse_grants(&[("bench.toml", &text)], None).unwrap()).unwrap()
}

pub fn requests(n: usize) -> Vec<(NodeId, Request)> {
    let mut r = Rng(7);
    (0..n)
        .map(|_| {
            let req = Request {
                dataset: format!("ds-{}", r.next_u64() % DATASETS as u64),
                purpose: r.pick(PURPOSES).to_owned(),
                action: Action::Read,
            };
            (node(&mut r), req)
        })
        .collect()
}

/// A realistic record: ~600 bytes, one ~200-character complaint mentioning a phone and an ID.
pub fn record() -> Record {
    let t = |s: &str| Value::Text(s.to_owned());
    vec![
        t("T2026000123456"),
        t("wuxi.liangxi.chongan.guangrui"),
        t("欧阳娜娜"),
        t("32020219850315123X"),
        t("13812345678"),
        t("江苏省无锡市梁溪区崇安寺街道广瑞路128号3单元502室"),
        t(&("来电人反映楼上住户长期深夜噪音扰民，多次协商无果，双方发生口角。来电人要求社区和物业上门调解，并留下联系电话13912345678，\
             身份证号32020219850315123X，希望尽快处理。".repeat(2))),
        t("邻里纠纷"),
        t("处理中"),
        t("2026-03-15"),
        t("12345热线"),
        t("王建国"),
        Value::Int(2),
        Value::Bool(false),
    ]
}
