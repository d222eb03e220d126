//! Python's text forms of JSON values, where Patroni's behaviour depends on them.

use serde_json::Value;

/// Python's `str()` of a value `json.loads` (or psycopg) produced: `None`, `True`,
/// `False`, a string as it is, a number as JSON writes it. Lists and objects give their
/// JSON text, which is equal exactly when their Python reprs are for every value Patroni
/// compares or prints this way.
pub(crate) fn python_str(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}
