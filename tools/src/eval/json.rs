//! JSON output of reports: pretty JSON to a file or stdout, settings' floats written as their `f32`.

use anyhow::Context;

/// `value` with every float written as the shortest decimal of its `f32` (settings are `f32`: `0.3`, not
/// `0.30000001192092896`).
pub(crate) fn floats_as_f32(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let shortest = n
                .as_f64()
                .and_then(|x| (x as f32).to_string().parse::<f64>().ok())
                .and_then(serde_json::Number::from_f64);
            Value::Number(shortest.unwrap_or(n))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(floats_as_f32).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, floats_as_f32(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Writes `value` as pretty JSON to `path` (`-`: stdout).
pub fn write_json<T: serde::Serialize>(value: &T, path: &str) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if path == "-" {
        println!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text + "\n").with_context(|| format!("writing JSON to {path}"))
    }
}
