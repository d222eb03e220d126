//! Python's and Patroni's forgiving readings of JSON values, reproduced so that a value
//! means the same thing to us as to a Patroni node reading the same key.

use serde_json::Value;

/// Decodes a stored value as UTF-8 and parses it as JSON; `None` (with a warning naming
/// `key`) when either step fails. Empty input is "no JSON" as well.
pub(super) fn parse_json(key: &str, raw: &[u8]) -> Option<Value> {
    let text = decode(key, raw)?;
    match serde_json::from_str(text) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(key, error = %err, "value is not valid JSON, reading it as empty");
            None
        }
    }
}

/// The stored bytes as UTF-8, or `None` with a warning naming `key`.
pub(super) fn decode<'a>(key: &str, raw: &'a [u8]) -> Option<&'a str> {
    match std::str::from_utf8(raw) {
        Ok(text) => Some(text),
        Err(err) => {
            tracing::warn!(key, error = %err, "value is not valid UTF-8, reading it as empty");
            None
        }
    }
}

/// A short description of a JSON value's type, for warnings.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Python's `bool(value)`: Patroni tests most tags this way, so `"false"` is true.
pub(super) fn py_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `patroni.utils.parse_bool`: `str(value).lower()` against `on/true/yes/1` and
/// `off/false/no/0`; anything else is `None`.
pub(super) fn parse_bool(value: &Value) -> Option<bool> {
    let text = match value {
        // str(True) == "True", str(1) == "1"; str(1.0) == "1.0" matches nothing.
        Value::Bool(b) => return Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(1) => return Some(true),
            Some(0) => return Some(false),
            _ => return None,
        },
        Value::String(s) => s.to_lowercase(),
        Value::Null | Value::Array(_) | Value::Object(_) => return None,
    };
    match text.as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Python's `str.strip()` whitespace: Unicode `White_Space` plus the four ASCII
/// information separators that `str.isspace()` also accepts.
pub(super) fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// `patroni.utils.parse_int(value)` without a base unit: ints, floats rounded half to
/// even, and strings read like C's `strtol(s, 0)` (`0x1A`, octal `010`, decimal) or
/// `strtod`, with nothing but whitespace after the number. Booleans, `null` and
/// containers are `None`, as is anything outside `i64`.
pub(super) fn parse_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            if n.is_u64() {
                None
            } else {
                n.as_f64().and_then(rint_to_i64)
            }
        }),
        Value::String(s) => parse_int_str(s),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

fn parse_int_str(s: &str) -> Option<i64> {
    let s = py_strip(s);
    let integer = strtol(s);
    let rest = integer.map_or(s, |(_, rest)| rest);
    // Patroni falls back to strtod when strtol stopped at a decimal point or exponent.
    if rest.starts_with(['.', 'e', 'E']) {
        let (value, rest) = strtod(s)?;
        // A unit without a base unit to convert to makes the whole value invalid.
        return if py_strip(rest).is_empty() {
            rint_to_i64(value)
        } else {
            None
        };
    }
    let (value, rest) = integer?;
    py_strip(rest).is_empty().then_some(value)
}

/// The regexes of `patroni.utils.strtol`, tried in its order: hex, octal, decimal.
fn strtol(s: &str) -> Option<(i64, &str)> {
    let (negative, body) = split_sign(s);
    let (digits, radix) = if let Some(hex) = body
        .strip_prefix("0x")
        .filter(|hex| hex.starts_with(|c: char| c.is_ascii_hexdigit()))
    {
        (leading(hex, |b| b.is_ascii_hexdigit()), 16)
    } else if let Some(octal) = body.strip_prefix('0') {
        // The leading zero is part of the octal number (`0` alone is zero).
        (
            &body[..=leading(octal, |b| (b'0'..=b'7').contains(&b)).len()],
            8,
        )
    } else if body.starts_with(|c: char| c.is_ascii_digit()) {
        (leading(body, |b| b.is_ascii_digit()), 10)
    } else {
        return None;
    };
    let end = s.len() - body.len() + usize::from(radix == 16) * 2 + digits.len();
    // Python's ints are unbounded; a value beyond i64 is no sane setting, so it is None.
    let magnitude = i64::from_str_radix(digits, radix).ok()?;
    Some((if negative { -magnitude } else { magnitude }, &s[end..]))
}

/// `patroni.utils.strtod`: `^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?`.
fn strtod(s: &str) -> Option<(f64, &str)> {
    let (_, body) = split_sign(s);
    let digits = |text: &str| leading(text, |b| b.is_ascii_digit()).len();
    let integer = digits(body);
    let fraction = body[integer..].strip_prefix('.').map_or(0, digits);
    let mut end = match (integer, fraction) {
        (_, 1..) => integer + 1 + fraction,
        (1.., 0) => integer,
        (0, 0) => return None,
    };
    if let Some(exponent) = body[end..].strip_prefix(['e', 'E']) {
        let (_, exponent_digits) = split_sign(exponent);
        let count = digits(exponent_digits);
        if count > 0 {
            end += 1 + (exponent.len() - exponent_digits.len()) + count;
        }
    }
    let end = s.len() - body.len() + end;
    let value: f64 = s[..end].parse().ok()?;
    Some((value, &s[end..]))
}

/// An optional leading `+` or `-`: (negative, the rest).
fn split_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

/// The longest prefix of ASCII bytes satisfying `accept`.
fn leading(s: &str, accept: impl Fn(u8) -> bool) -> &str {
    &s[..s.bytes().take_while(|&b| accept(b)).count()]
}

/// A float's integer value if it fits `i64` (2^63 is exact in `f64`, everything below
/// it fits).
fn whole_to_i64(whole: f64) -> Option<i64> {
    let limit = 2f64.powi(63);
    (whole.is_finite() && (-limit..limit).contains(&whole)).then_some(whole as i64)
}

/// `patroni.utils.rint` (round half to even), then `int()`, bounded to `i64`.
fn rint_to_i64(value: f64) -> Option<i64> {
    whole_to_i64(value.round_ties_even())
}

/// Python's `int(value)` for what JSON can hold: ints, floats truncated, booleans as 0/1,
/// strings of an optionally signed decimal with single `_` between digits. `None` is
/// what Python would raise on (and anything outside `i64`).
pub(super) fn py_int(value: &Value) -> Option<i64> {
    match value {
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Number(n) => n.as_i64().or_else(|| whole_to_i64(n.as_f64()?.trunc())),
        Value::String(s) => py_int_str(s),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn py_int_str(s: &str) -> Option<i64> {
    let (negative, body) = split_sign(py_strip(s));
    let well_formed = !body.is_empty()
        && !body.starts_with('_')
        && !body.ends_with('_')
        && !body.contains("__")
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return None;
    }
    let digits: String = body.chars().filter(|&c| c != '_').collect();
    let magnitude: i64 = digits.parse().ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// A WAL position or timeline as we accept it: a non-negative JSON integer or a string of
/// ASCII decimal digits. Floats, negatives and anything else are `None`.
pub(super) fn non_negative_int(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Each row was checked against `patroni.utils.parse_int` (Patroni 3.0.2, Python 3.11).
    #[test]
    fn parse_int_reads_values_like_patroni() {
        let cases = [
            (json!("1"), Some(1)),
            (json!(" 0x1A "), Some(26)),
            (json!("010"), Some(8)),
            (json!("08"), None),
            (json!("1.5"), Some(2)),
            (json!("2.5"), Some(2)),
            (json!(".5"), Some(0)),
            (json!("1."), None),
            (json!("1e3"), Some(1000)),
            (json!("1e"), None),
            (json!("-0.0"), Some(0)),
            (json!("+7"), Some(7)),
            (json!("0x"), None),
            (json!("1 kB"), None),
            (json!(true), None),
            (json!(null), None),
            (json!(1.5), Some(2)),
            (json!("  12  "), Some(12)),
            (json!("1_000"), None),
            (json!("-3"), Some(-3)),
            (json!(-3), Some(-3)),
            (json!([1]), None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_int(&value), expected, "parse_int({value})");
        }
    }

    #[test]
    fn py_int_reads_values_like_python_int() {
        let cases = [
            (json!(30), Some(30)),
            (json!(30.9), Some(30)),
            (json!(-30.9), Some(-30)),
            (json!(true), Some(1)),
            (json!(" 25 "), Some(25)),
            (json!("1_000"), Some(1000)),
            (json!("1__0"), None),
            (json!("_1"), None),
            (json!("0x10"), None),
            (json!("1.0"), None),
            (json!(""), None),
            (json!(null), None),
            (json!({}), None),
        ];
        for (value, expected) in cases {
            assert_eq!(py_int(&value), expected, "int({value})");
        }
    }

    #[test]
    fn parse_bool_accepts_patronis_spellings() {
        for yes in [
            json!("on"),
            json!("TRUE"),
            json!("Yes"),
            json!("1"),
            json!(1),
            json!(true),
        ] {
            assert_eq!(parse_bool(&yes), Some(true), "{yes}");
        }
        for no in [
            json!("off"),
            json!("False"),
            json!("no"),
            json!("0"),
            json!(0),
            json!(false),
        ] {
            assert_eq!(parse_bool(&no), Some(false), "{no}");
        }
        for neither in [
            json!("y"),
            json!(1.0),
            json!(2),
            json!(null),
            json!([]),
            json!("quorum"),
        ] {
            assert_eq!(parse_bool(&neither), None, "{neither}");
        }
    }

    #[test]
    fn truthiness_is_pythons() {
        assert!(py_truthy(&json!("false")));
        assert!(py_truthy(&json!(-1)));
        assert!(!py_truthy(&json!(0.0)));
        assert!(!py_truthy(&json!("")));
        assert!(!py_truthy(&json!({})));
        assert!(!py_truthy(&json!(null)));
    }

    #[test]
    fn positions_accept_digits_only() {
        assert_eq!(non_negative_int(&json!(67_419_744)), Some(67_419_744));
        assert_eq!(non_negative_int(&json!(" 42 ")), Some(42));
        assert_eq!(non_negative_int(&json!(-1)), None);
        assert_eq!(non_negative_int(&json!(1.0)), None);
        assert_eq!(non_negative_int(&json!("0x10")), None);
        assert_eq!(non_negative_int(&json!("99999999999999999999999")), None);
    }
}
