//! The validated catalog: datasets and fields that cannot hold an invalid value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{DatasetId, Grade, Level, NodeId};

macro_rules! keyword_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every accepted spelling, in documentation order.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The keyword as written in catalogs.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => {
                        let mut msg = format!("unknown {} {s:?}", $what);
                        match crate::toml_reader::closest(s, Self::ALL) {
                            Some(best) => msg.push_str(&format!(", did you mean {best:?}?")),
                            None => msg.push_str(&format!(" (expected one of: {})", Self::ALL.join(", "))),
                        }
                        Err(msg)
                    }
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum!(
    /// Sharing type (共享类型).
    Sharing, "sharing type" {
        /// 无条件共享: any federation member may read it (field grades still apply).
        Unconditional = "unconditional",
        /// 有条件共享: only with a grant.
        Conditional = "conditional",
        /// 不予共享: never leaves the department; not even listed to peers.
        None = "none",
    }
);

keyword_enum!(
    /// Open attribute (开放属性) towards the public.
    OpenAttr, "open attribute" {
        /// 无条件开放.
        Open = "open",
        /// 有条件开放.
        Conditional = "conditional",
        /// 不予开放.
        Closed = "closed",
    }
);

keyword_enum!(
    /// How often the dataset changes (更新频率).
    UpdateFrequency, "update frequency" {
        /// Continuously.
        Realtime = "realtime",
        /// Hourly.
        Hourly = "hourly",
        /// Daily.
        Daily = "daily",
        /// Weekly.
        Weekly = "weekly",
        /// Monthly.
        Monthly = "monthly",
        /// Quarterly.
        Quarterly = "quarterly",
        /// Yearly.
        Yearly = "yearly",
        /// When something happens.
        OnDemand = "on-demand",
    }
);

keyword_enum!(
    /// A field's value type.
    FieldType, "field type" {
        /// UTF-8 text.
        String = "string",
        /// 64-bit signed integer.
        Integer = "integer",
        /// Decimal number, kept as text to avoid rounding.
        Decimal = "decimal",
        /// true/false.
        Bool = "bool",
        /// Calendar date, YYYY-MM-DD.
        Date = "date",
        /// Date and time, RFC 3339.
        Datetime = "datetime",
        /// A region path such as wuxi.liangxi.
        Region = "region",
    }
);

keyword_enum!(
    /// What kind of personal information a field holds; drives default masking and text scanning.
    PiiKind, "PII kind" {
        /// Not personal information.
        None = "none",
        /// A person's name.
        PersonName = "person-name",
        /// Resident identity card number (18 characters, MOD 11-2 check).
        ResidentId = "resident-id",
        /// Mobile number.
        Mobile = "mobile",
        /// Landline number.
        Landline = "landline",
        /// Postal address.
        Address = "address",
        /// Bank card number (Luhn).
        BankCard = "bank-card",
        /// Unified social credit code (enterprise).
        Uscc = "uscc",
        /// E-mail address.
        Email = "email",
        /// Free text that may mention any of the above.
        FreeText = "free-text",
    }
);

/// A generalization target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "to")]
pub enum Generalize {
    /// A date or datetime to its year and month (2024-03).
    Month,
    /// A date or datetime to its year (2024).
    Year,
    /// An age (integer) to a band of `width` years (30-39).
    AgeBand {
        /// Band width in years.
        width: u8,
    },
    /// A region path to its ancestor at `level`.
    Region {
        /// The level to cut to.
        level: Level,
    },
    /// A postal address cut to its district (区/县).
    Address,
}

/// A desensitization rule: what a field becomes when the consumer's clearance is below its grade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Rule {
    /// Keep the first and last characters, replace the rest with `*` one for one.
    Mask {
        /// Characters kept at the start.
        keep_first: u8,
        /// Characters kept at the end.
        keep_last: u8,
    },
    /// Keep the surname (compound surnames too), mask the given name: `张*`, `欧阳**`.
    MaskName,
    /// A bank card as `6222 **** **** 3256`.
    MaskCard,
    /// An e-mail address as `z***@example.com`.
    MaskEmail,
    /// HMAC-SHA256 keyed per consumer: joinable within one consumer, not across consumers.
    Hash,
    /// A resident-id-shaped pseudonym with a valid check digit, keyed per consumer.
    Pseudonym,
    /// Less precision.
    Generalize(Generalize),
    /// Replaced by a fixed token.
    Redact {
        /// The token.
        token: String,
    },
    /// The field is removed from the record.
    Drop,
    /// Free text scanned for PII, each finding masked inline.
    Scan,
}

/// The token `redact` uses unless the steward chooses another.
pub const DEFAULT_REDACT_TOKEN: &str = "***";

impl Rule {
    /// The operator's name, as written in catalogs and shown by `policy explain`.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Mask { .. } => "mask",
            Rule::MaskName => "mask-name",
            Rule::MaskCard => "mask-card",
            Rule::MaskEmail => "mask-email",
            Rule::Hash => "hash",
            Rule::Pseudonym => "pseudonym",
            Rule::Generalize(_) => "generalize",
            Rule::Redact { .. } => "redact",
            Rule::Drop => "drop",
            Rule::Scan => "scan",
        }
    }

    /// The rule a field of this PII kind gets when the steward writes none.
    pub fn default_for(pii: PiiKind) -> Rule {
        match pii {
            PiiKind::PersonName => Rule::MaskName,
            PiiKind::ResidentId => Rule::Mask { keep_first: 3, keep_last: 4 },
            PiiKind::Mobile => Rule::Mask { keep_first: 3, keep_last: 4 },
            PiiKind::Landline => Rule::Mask { keep_first: 5, keep_last: 4 },
            PiiKind::Address => Rule::Generalize(Generalize::Address),
            PiiKind::BankCard => Rule::MaskCard,
            PiiKind::Uscc => Rule::Mask { keep_first: 8, keep_last: 2 },
            PiiKind::Email => Rule::MaskEmail,
            PiiKind::FreeText => Rule::Scan,
            // Nothing known about the value: the safe default is not to send it.
            PiiKind::None => Rule::Drop,
        }
    }

    /// Why this rule cannot apply to a field of type `ty` and kind `pii`, if it cannot.
    pub fn misfit(&self, ty: FieldType, pii: PiiKind) -> Option<String> {
        let text_only = |op: &str| {
            (ty != FieldType::String).then(|| format!("`{op}` applies to string fields, not {ty}"))
        };
        match self {
            Rule::Mask { .. } | Rule::MaskName | Rule::MaskCard | Rule::MaskEmail | Rule::Scan => {
                text_only(self.name())
            }
            Rule::Pseudonym => (pii != PiiKind::ResidentId)
                .then(|| "`pseudonym` applies to resident-id fields only".to_owned()),
            Rule::Generalize(g) => {
                let ok = match g {
                    Generalize::Month | Generalize::Year => {
                        matches!(ty, FieldType::Date | FieldType::Datetime)
                    }
                    Generalize::AgeBand { .. } => ty == FieldType::Integer,
                    Generalize::Region { .. } => ty == FieldType::Region,
                    Generalize::Address => ty == FieldType::String,
                };
                (!ok).then(|| format!("cannot generalize a {ty} field {}", g.describe()))
            }
            Rule::Hash | Rule::Redact { .. } | Rule::Drop => None,
        }
    }
}

impl Generalize {
    fn describe(&self) -> String {
        match self {
            Generalize::Month => "to a month".into(),
            Generalize::Year => "to a year".into(),
            Generalize::AgeBand { width } => format!("to {width}-year age bands"),
            Generalize::Region { level } => format!("to level {}", level.get()),
            Generalize::Address => "to a district".into(),
        }
    }
}

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Column name, `[a-z][a-z0-9_]*`.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// What the field is about, e.g. `personal.contact`.
    pub classification: String,
    /// Sensitivity.
    pub grade: Grade,
    /// Kind of personal information.
    pub pii: PiiKind,
    /// Desensitization when the consumer's clearance is below `grade`.
    pub rule: Rule,
    /// May be empty.
    pub nullable: bool,
    /// What it holds, for consumers.
    pub description: String,
}

/// One catalog entry (资源).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Stable id.
    pub id: DatasetId,
    /// Short title.
    pub title: String,
    /// What it holds.
    pub description: String,
    /// The node that provides it.
    pub owner: NodeId,
    /// Responsible person or office and how to reach them.
    pub steward: String,
    /// How often it changes.
    pub update: UpdateFrequency,
    /// Sharing type.
    pub sharing: Sharing,
    /// Open attribute.
    pub open: OpenAttr,
    /// What it is about.
    pub classification: String,
    /// Sensitivity: never below any field's grade.
    pub grade: Grade,
    /// The field holding each record's region path.
    pub jurisdiction: String,
    /// The field identifying each record.
    pub primary_key: String,
    /// Search words.
    pub keywords: Vec<String>,
    /// Columns, in order.
    pub fields: Vec<Field>,
}

impl Dataset {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The index of the field called `name`.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

/// A node's whole catalog: datasets sorted by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(from = "CatalogWire")]
pub struct Catalog {
    datasets: Vec<Dataset>,
}

// Catalogs received from peers are re-sorted so lookups stay correct whatever the sender did.
#[derive(Deserialize)]
struct CatalogWire {
    datasets: Vec<Dataset>,
}

impl From<CatalogWire> for Catalog {
    fn from(w: CatalogWire) -> Catalog {
        Catalog::new(w.datasets)
    }
}

impl Catalog {
    /// Builds a catalog; ids must already be unique (the parser guarantees it).
    pub(crate) fn new(mut datasets: Vec<Dataset>) -> Catalog {
        datasets.sort_by(|a, b| a.id.cmp(&b.id));
        Catalog { datasets }
    }

    /// A catalog of `datasets` (sorted by id here).
    pub fn from_datasets(datasets: Vec<Dataset>) -> Catalog {
        Catalog::new(datasets)
    }

    /// Every dataset, by id.
    pub fn datasets(&self) -> &[Dataset] {
        &self.datasets
    }

    /// The dataset with `id`.
    pub fn get(&self, id: &str) -> Option<&Dataset> {
        self.datasets.binary_search_by(|d| d.id.as_str().cmp(id)).ok().map(|i| &self.datasets[i])
    }

    /// What peers may see: everything but sharing type `none`.
    pub fn shareable(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets.iter().filter(|d| d.sharing != Sharing::None)
    }

    /// A stable SHA-256 over the normalized catalog (hex), recorded in audit entries.
    pub fn digest(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        crate::hex(ring::digest::digest(&ring::digest::SHA256, &canonical).as_ref())
    }
}
