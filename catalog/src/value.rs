//! Record values as they travel between source, masking and wire.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One field's value. Dates, datetimes, decimals and regions travel as text in their canonical
/// form (YYYY-MM-DD, RFC 3339, decimal digits, region path); the catalog says which is which.
///
/// Serialized as the plain value (null, bool, integer, string). Deserialization is written by
/// hand: serde's untagged enums buffer each value and format an error for every variant tried,
/// which made decoding record batches dozens of times slower.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null, a boolean, an integer or a string")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        i64::try_from(u).map(Value::Int).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Text(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::Text(s))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_cbor_and_json() {
        let rec: Record =
            vec![Value::Null, Value::Bool(true), Value::Int(-7), Value::Text("欧阳娜娜".into())];
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(&rec, &mut cbor).unwrap();
        assert_eq!(ciborium::de::from_reader::<Record, _>(cbor.as_slice()).unwrap(), rec);
        let json = serde_json::to_string(&rec).unwrap();
        assert_eq!(json, r#"[null,true,-7,"欧阳娜娜"]"#);
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), rec);
        assert!(serde_json::from_str::<Value>("1.5").is_err());
    }
}
