//! Human-readable rows for `weir run`'s standard output.

use std::time::{Duration, UNIX_EPOCH};

use crate::value::{Row, Schema, Value};

/// Epoch milliseconds as an RFC 3339 UTC time (`2023-11-14T22:14:00Z`).
pub fn timestamp(ms: i64) -> String {
    if ms < 0 {
        return ms.to_string();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    if ms % 1000 == 0 {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// `[window_start, window_end) key=value ...`, the window first when the row has one.
pub fn readable(schema: &Schema, row: &Row) -> String {
    let start = schema.index("window_start");
    let end = schema.index("window_end");
    let mut out = String::new();
    if let (Some(s), Some(e)) = (start, end)
        && let (Value::Int(s), Value::Int(e)) = (&row[s], &row[e])
    {
        out.push_str(&format!("[{} .. {}) ", timestamp(*s), timestamp(*e)));
    }
    let fields = schema.fields.iter().zip(row).enumerate().filter(|(i, _)| Some(*i) != start && Some(*i) != end);
    let parts: Vec<String> = fields
        .map(|(_, ((name, _), v))| match v {
            Value::Float(f) => format!("{name}={f:.3}"),
            v => format!("{name}={v}"),
        })
        .collect();
    out.push_str(&parts.join(" "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::FieldType;

    #[test]
    fn windows_come_first_in_utc() {
        let schema = Schema::new([
            ("region", FieldType::String),
            ("window_start", FieldType::Int),
            ("window_end", FieldType::Int),
            ("count", FieldType::Int),
        ]);
        let row = vec![
            Value::Str("east".into()),
            Value::Int(1_700_000_040_000),
            Value::Int(1_700_000_100_000),
            Value::Int(7),
        ];
        assert_eq!(readable(&schema, &row), "[2023-11-14T22:14:00Z .. 2023-11-14T22:15:00Z) region=east count=7");
    }
}
