//! Record values as they travel between source, masking and wire.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One field's value. Dates, datetimes, decimals and regions travel as text in their canonical
/// form (YYYY-MM-DD, RFC 3339, decimal digits, region path); the catalog says which is which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// Empty.
    Null,
    /// true/false.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// Text (also dates, decimals and regions).
    Text(String),
}

impl Value {
    /// The value as text, if it is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// A record: one value per field of its dataset, in the dataset's field order.
pub type Record = Vec<Value>;
