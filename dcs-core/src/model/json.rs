//! JSON text exactly as Python's `json.dumps(value, separators=(',', ':'))` writes it.
//!
//! Patroni decides "changed" by comparing value strings (the etcd3 watch wakes the HA loop
//! only when the text of `leader`, `status` or `config` changes), so we write the same
//! bytes it would: `ensure_ascii` escapes (`\u00e9`, surrogate pairs for astral code
//! points, `\u007f`), Python's float `repr` (`1e+16`, `1e-05`, `1.0`), and objects in the
//! field order Patroni uses. Objects held in a [`Map`] come out in key order, since
//! `serde_json` here does not keep insertion order.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// Appends `value` as compact, ASCII-only JSON.
pub(super) fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

/// Appends a JSON object with `map`'s entries in key order.
pub(super) fn write_map(out: &mut String, map: &Map<String, Value>) {
    let mut object = Object::new(out);
    for (key, value) in map {
        object.field(key, value);
    }
    object.end();
}

/// `value` as compact, ASCII-only JSON.
#[cfg(test)]
fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// Writes an object field by field, in the order the caller chooses.
pub(super) struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    pub(super) fn new(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(':');
    }

    pub(super) fn field(&mut self, key: &str, value: &Value) {
        self.key(key);
        write_value(self.out, value);
    }

    pub(super) fn str_field(&mut self, key: &str, value: &str) {
        self.key(key);
        write_str(self.out, value);
    }

    pub(super) fn u64_field(&mut self, key: &str, value: u64) {
        self.key(key);
        write!(self.out, "{value}").expect("writing to a String cannot fail");
    }

    pub(super) fn null_field(&mut self, key: &str) {
        self.key(key);
        self.out.push_str("null");
    }

    /// A field whose value the caller writes itself.
    pub(super) fn raw_field(&mut self, key: &str, write: impl FnOnce(&mut String)) {
        self.key(key);
        write(self.out);
    }

    pub(super) fn end(self) {
        self.out.push('}');
    }
}

/// Python's `encode_basestring_ascii`: a JSON string as Python's `json` module writes it
/// (non-ASCII as `\uXXXX` escapes), appended to `out`.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").expect("writing to a String cannot fail");
                }
            }
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        write!(out, "{i}").expect("writing to a String cannot fail");
    } else if let Some(u) = n.as_u64() {
        write!(out, "{u}").expect("writing to a String cannot fail");
    } else if let Some(f) = n.as_f64() {
        write_float(out, f);
    }
}

/// Python's `float.__repr__`: the shortest digits that round-trip, fixed notation for
/// decimal exponents in `-4..16`, otherwise `d.ddde±XX`.
fn write_float(out: &mut String, f: f64) {
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    // Rust's `{:e}` prints the same shortest round-trip digits, as `d.ddde<exp>`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            out.push_str(&digits);
        } else {
            let point = point.unsigned_abs() as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        write!(out, "e{sign}{:02}", exponent.unsigned_abs())
            .expect("writing to a String cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Expected text printed by `json.dumps(..., separators=(',', ':'))` on Python 3.11.
    #[test]
    fn floats_are_written_like_python_repr() {
        let value = json!([
            1e16,
            1e15,
            0.0001,
            0.00001,
            1.5,
            -0.0,
            123.456,
            1e300,
            5e-324,
            2.5e-5,
            1_234_567_890_123_456_789.0,
            0.1 + 0.2
        ]);
        assert_eq!(
            to_string(&value),
            "[1e+16,1000000000000000.0,0.0001,1e-05,1.5,-0.0,123.456,1e+300,5e-324,2.5e-05,\
             1.2345678901234568e+18,0.30000000000000004]"
        );
    }

    #[test]
    fn strings_are_escaped_like_ensure_ascii() {
        assert_eq!(
            to_string(&json!("é😀\u{7f}\u{1}\t\"\\/ ~")),
            r#""\u00e9\ud83d\ude00\u007f\u0001\t\"\\/ ~""#
        );
    }

    #[test]
    fn objects_are_compact_and_keep_their_key_order() {
        assert_eq!(
            to_string(&json!({"b": [1, null], "a": {"x": true}})),
            r#"{"b":[1,null],"a":{"x":true}}"#
        );
    }
}
