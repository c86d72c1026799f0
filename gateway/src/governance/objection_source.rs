//! Correcting a record at its source when the steward accepts an objection with the corrected
//! value: one `UPDATE` of one field of the row with that primary key, in the department's own
//! database. The gateway otherwise only reads sources; this is the one write, made by the
//! steward's command, so the correction is in the data itself and not a flag beside it.

use fedgate_catalog::Value;

use crate::config::SourceKind;
use crate::source::quote;

/// How long the source may take to take the correction.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sets `field` to `value` in the row of `table` whose `pk` is `key`; returns the rows changed
/// (1 when it worked). A source the gateway may not write to says so in the error.
pub async fn write(
    kind: &SourceKind,
    table: &str,
    pk: &str,
    key: &Value,
    field: &str,
    value: &Value,
) -> Result<u64, String> {
    match kind {
        SourceKind::Sqlite(path) => {
            let (path, sql) = (path.clone(), sqlite_update(table, pk, field));
            let (key, value) = (sqlite_value(key), sqlite_value(value));
            tokio::task::spawn_blocking(move || {
                use rusqlite::OpenFlags;
                let conn = rusqlite::Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                conn.busy_timeout(WRITE_TIMEOUT).map_err(|e| format!("{}: {e}", path.display()))?;
                let n = conn
                    .execute(&sql, rusqlite::params![value, key])
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(n as u64)
            })
            .await
            .map_err(|e| e.to_string())?
        }
        SourceKind::Postgres(conn_str) => {
            let sql = postgres_update(table, pk, key, field, value)?;
            let run = async {
                let (client, connection) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("PostgreSQL: {e}"))?;
                let driver = tokio::spawn(connection);
                let done = client.simple_query(&sql).await.map_err(|e| format!("PostgreSQL: {e}"));
                driver.abort();
                let changed = done?.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
                    _ => None,
                });
                Ok(changed.unwrap_or(0))
            };
            tokio::time::timeout(WRITE_TIMEOUT, run)
                .await
                .unwrap_or_else(|_| Err(format!("PostgreSQL: no answer within {WRITE_TIMEOUT:?}")))
        }
    }
}

fn sqlite_update(table: &str, pk: &str, field: &str) -> String {
    format!("UPDATE {} SET {} = ?1 WHERE {} = ?2", quote(table), quote(field), quote(pk))
}

fn sqlite_value(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(*b)),
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

/// The statement for PostgreSQL's simple protocol, values as literals: a text literal is
/// untyped there, so the server converts it to the column's type (a date, a numeric), which a
/// bound text parameter would not be. The primary key is compared as text, as reads filter it.
fn postgres_update(table: &str, pk: &str, key: &Value, field: &str, value: &Value) -> Result<String, String> {
    Ok(format!(
        "SET standard_conforming_strings = on; UPDATE {} SET {} = {} WHERE {}::text = {}",
        quote(table),
        quote(field),
        pg_literal(value)?,
        quote(pk),
        pg_literal(&Value::Text(crate::governance::objection::key_text(key).unwrap_or_default()))?,
    ))
}

/// A value as a PostgreSQL literal with standard-conforming strings: quotes doubled, and a NUL
/// (which no text column holds) refused.
fn pg_literal(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Text(s) if s.contains('\0') => return Err("the value holds a NUL character".into()),
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_literals_cannot_break_out_of_their_quotes() {
        let sql =
            postgres_update("t", "id", &Value::Int(7), "name", &Value::Text("o'; DROP TABLE t; --".into()))
                .unwrap();
        assert!(
            sql.ends_with(r#"UPDATE "t" SET "name" = 'o''; DROP TABLE t; --' WHERE "id"::text = '7'"#),
            "{sql}"
        );
        assert!(pg_literal(&Value::Text("a\0b".into())).is_err());
        assert_eq!(pg_literal(&Value::Null).unwrap(), "NULL");
    }

    #[tokio::test]
    async fn a_sqlite_source_takes_the_correction_of_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.db");
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE p (id TEXT PRIMARY KEY, mobile TEXT); INSERT INTO p VALUES ('a', '1'), ('b', '2');",
        )
        .unwrap();
        drop(c);
        let kind = SourceKind::Sqlite(path.clone());
        let key = Value::Text("a".into());
        assert_eq!(write(&kind, "p", "id", &key, "mobile", &Value::Text("9".into())).await, Ok(1));
        let none = Value::Text("zz".into());
        assert_eq!(write(&kind, "p", "id", &none, "mobile", &Value::Text("9".into())).await, Ok(0));
        let c = rusqlite::Connection::open(&path).unwrap();
        let got: Vec<String> = c
            .prepare("SELECT mobile FROM p ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, ["9", "2"]);
        let err = write(&kind, "p", "id", &key, "nope", &Value::Null).await.unwrap_err();
        assert!(err.contains("src.db") && err.contains("nope"), "{err}");
    }
}
