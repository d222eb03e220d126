//! Text as patronictl prints it: `PrettyTable` frames, tab-separated rows, Python's
//! `json.dumps` and `PyYAML`'s `safe_dump`. Pure: values in, text out.

use std::fmt::Write as _;

use dcs_core::model::write_python_json_string;
use serde_json::{Map, Value};

/// How a command prints its rows (`-f/--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `PrettyTable`'s framed table (the default).
    Pretty,
    /// Tab-separated, a header line first.
    Tsv,
    /// One JSON array of objects, Python's `json.dumps` spacing.
    Json,
    /// One YAML sequence of mappings, `PyYAML`'s style.
    Yaml,
    /// `topology`: the pretty table with replicas indented under their upstream.
    Topology,
}

impl Format {
    /// Reads a `-f` value; `yml` is patronictl's alias of `yaml`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pretty" => Self::Pretty,
            "tsv" => Self::Tsv,
            "json" => Self::Json,
            "yaml" | "yml" => Self::Yaml,
            "topology" => Self::Topology,
            _ => return None,
        })
    }
}

/// Column alignment in a pretty table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A `PrettyTable`-style frame: `+---+` rules, `| cell |` rows, one space of padding, the
/// `title` (if any) written into the top rule as patronictl does, a rule between rows only
/// when some cell spans several lines.
pub(crate) fn pretty_table(
    title: Option<&str>,
    columns: &[&str],
    align: &[Align],
    rows: &[Vec<String>],
) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            rows.iter()
                .filter_map(|row| row.get(i))
                .flat_map(|cell| cell.split('\n'))
                .map(width)
                .chain([width(name)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths.iter().fold(String::from("+"), |mut rule, w| {
        rule.push_str(&"-".repeat(w + 2));
        rule.push('+');
        rule
    });
    let every_row_ruled = rows.iter().flatten().any(|cell| cell.contains('\n'));
    let line = |cells: &[&str]| -> String {
        let mut out = String::from("|");
        for (i, w) in widths.iter().enumerate() {
            let cell = cells.get(i).copied().unwrap_or("");
            let pad = " ".repeat(w.saturating_sub(width(cell)));
            match align.get(i).copied().unwrap_or(Align::Left) {
                Align::Left => write!(out, " {cell}{pad} |"),
                Align::Right => write!(out, " {pad}{cell} |"),
            }
            .expect("writing to a String cannot fail");
        }
        out
    };

    let mut out = String::new();
    out.push_str(&titled(&rule, title));
    out.push('\n');
    out.push_str(&line(columns));
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for (index, row) in rows.iter().enumerate() {
        let split: Vec<Vec<&str>> = row.iter().map(|cell| cell.split('\n').collect()).collect();
        let height = split.iter().map(Vec::len).max().unwrap_or(1);
        for n in 0..height {
            let cells: Vec<&str> = split
                .iter()
                .map(|lines| lines.get(n).copied().unwrap_or(""))
                .collect();
            out.push_str(&line(&cells));
            out.push('\n');
        }
        if every_row_ruled && index + 1 < rows.len() {
            out.push_str(&rule);
            out.push('\n');
        }
    }
    out.push_str(&rule);
    out
}

/// patronictl's `__build_header`: the title overwrites the rule after its first `+`,
/// cut to fit.
fn titled(rule: &str, title: Option<&str>) -> String {
    let Some(title) = title else {
        return rule.to_owned();
    };
    let room = rule.chars().count().saturating_sub(2);
    let title: String = title.chars().take(room).collect();
    let rest: String = rule.chars().skip(1 + title.chars().count()).collect();
    format!("+{title}{rest}")
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// Tab-separated lines: the header, then each row.
pub(crate) fn tsv(columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut lines = vec![columns.join("\t")];
    lines.extend(rows.iter().map(|row| row.join("\t")));
    lines.join("\n")
}

/// Python's `json.dumps(value)`: `", "` and `": "` separators, ASCII only.
pub(crate) fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_python_json(&mut out, value);
    out
}

fn write_python_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_python_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json_string(out, key);
                out.push_str(": ");
                write_python_json(out, item);
            }
            out.push('}');
        }
    }
}

/// `PyYAML`'s `safe_dump(value, default_flow_style=flow, allow_unicode=True)`, as
/// patronictl's `format_config_for_editing` calls it: keys sorted, two-space indents,
/// sequences in a mapping not indented, strings quoted only when plain text would read
/// back as something else. Ends with a newline.
pub(crate) fn yaml(value: &Value, flow: bool) -> String {
    let mut out = String::new();
    if flow || !is_collection(value) || is_empty_collection(value) {
        write_flow(&mut out, value, false);
        out.push('\n');
        if !is_collection(value) {
            // PyYAML ends a lone scalar document with the `...` marker.
            out.push_str("...\n");
        }
    } else {
        write_block(&mut out, value, 0);
    }
    out
}

fn is_collection(value: &Value) -> bool {
    matches!(value, Value::Array(_) | Value::Object(_))
}

fn is_empty_collection(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// Writes a non-empty collection in block style at `indent`; every line ends with `\n`.
fn write_block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, item) in sorted(map) {
                out.push_str(&pad);
                out.push_str(&scalar_text(key, false));
                out.push(':');
                block_child(out, item, indent, true);
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                block_child(out, item, indent, false);
            }
        }
        _ => {
            out.push_str(&pad);
            write_flow(out, value, false);
            out.push('\n');
        }
    }
}

/// The value after `key:` or `-`: inline when a scalar or empty, else on the next lines —
/// a mapping's sequence at the key's own indent (`PyYAML`'s style), everything else two
/// spaces in. A mapping inside a sequence item starts on the dash's line.
fn block_child(out: &mut String, item: &Value, indent: usize, in_mapping: bool) {
    if !is_collection(item) || is_empty_collection(item) {
        out.push(' ');
        write_flow(out, item, false);
        out.push('\n');
        return;
    }
    match (in_mapping, item) {
        (true, Value::Array(_)) => {
            out.push('\n');
            write_block(out, item, indent);
        }
        (true, _) => {
            out.push('\n');
            write_block(out, item, indent + 2);
        }
        (false, _) => {
            // `- key: value` with the rest of the item aligned under `key`.
            let mut nested = String::new();
            write_block(&mut nested, item, indent + 2);
            out.push(' ');
            out.push_str(&nested[indent + 2..]);
        }
    }
}

fn write_flow(out: &mut String, value: &Value, in_flow: bool) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&yaml_number(n)),
        Value::String(s) => out.push_str(&scalar_text(s, in_flow)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_flow(out, item, true);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in sorted(map).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&scalar_text(key, true));
                out.push_str(": ");
                write_flow(out, item, true);
            }
            out.push('}');
        }
    }
}

fn yaml_number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.is_infinite() => {
            if f > 0.0 { ".inf" } else { "-.inf" }.to_owned()
        }
        Some(f) if n.is_f64() && f.is_nan() => ".nan".to_owned(),
        _ => n.to_string(),
    }
}

/// A string as `PyYAML` writes it: plain when that reads back as the same string, else
/// single-quoted, or double-quoted with escapes when it holds control characters.
fn scalar_text(text: &str, in_flow: bool) -> String {
    if text.chars().any(char::is_control) {
        let mut out = String::new();
        write_python_json_string(&mut out, text);
        return out;
    }
    if plain_allowed(text, in_flow) && !resolves_to_non_string(text) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

/// `PyYAML`'s `analyze_scalar` for one-line text: no indicator where YAML would read
/// structure, no surrounding spaces.
fn plain_allowed(text: &str, in_flow: bool) -> bool {
    if text.is_empty()
        || text.starts_with(' ')
        || text.ends_with(' ')
        || text.starts_with("---")
        || text.starts_with("...")
    {
        return false;
    }
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_is_space = chars.get(i + 1).is_none_or(|n| *n == ' ');
        let flow_indicator = matches!(c, ',' | '?' | '[' | ']' | '{' | '}');
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(c) {
                return false;
            }
            if matches!(c, '?' | ':') && (in_flow || next_is_space) {
                return false;
            }
            if c == '-' && next_is_space {
                return false;
            }
        } else {
            if in_flow && flow_indicator {
                return false;
            }
            if c == ':' && (in_flow || next_is_space) {
                return false;
            }
            if c == '#' && chars[i - 1] == ' ' {
                return false;
            }
        }
    }
    true
}

/// Whether `PyYAML`'s implicit resolvers would read `text` as something other than a string:
/// null, a YAML 1.1 boolean, an int, a float, a timestamp, `<<` or `=`.
fn resolves_to_non_string(text: &str) -> bool {
    const WORDS: [&str; 25] = [
        "~", "null", "Null", "NULL", "yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE",
        "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "<<", "=", "",
    ];
    WORDS.contains(&text) || looks_numeric(text) || looks_like_date(text)
}

/// `PyYAML`'s int and float patterns, loosely: an optional sign, then digits (with `_`,
/// `:` for sexagesimal, one `.`, an exponent), `0x`/`0b`/`0o` forms, `.inf`, `.nan`.
fn looks_numeric(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    if let Some(hex) = unsigned.strip_prefix("0x") {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    }
    if let Some(bin) = unsigned.strip_prefix("0b") {
        return !bin.is_empty() && bin.chars().all(|c| matches!(c, '0' | '1' | '_'));
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) if unsigned.contains('.') => (&unsigned[..at], Some(&unsigned[at + 1..])),
        _ => (unsigned, None),
    };
    if let Some(exponent) = exponent {
        let digits = exponent.strip_prefix(['+', '-']);
        if !digits.is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())) {
            return false;
        }
    }
    let mut seen_digit = false;
    let mut dots = 0;
    for c in mantissa.chars() {
        match c {
            '0'..='9' => seen_digit = true,
            '_' | ':' => {}
            '.' => dots += 1,
            _ => return false,
        }
    }
    seen_digit && dots <= 1 && !mantissa.starts_with(['_', ':'])
}

/// `PyYAML`'s timestamp pattern: `YYYY-MM-DD`, or that with a time (`T`, `t` or blanks
/// between), optional fraction and optional zone, and nothing after.
fn looks_like_date(text: &str) -> bool {
    fn digits(text: &str, min: usize, max: usize) -> Option<&str> {
        let count = text.bytes().take_while(u8::is_ascii_digit).count();
        (min..=max).contains(&count).then(|| &text[count..])
    }
    let date_only = || -> Option<bool> {
        let rest = digits(text, 4, 4)?.strip_prefix('-')?;
        let rest = digits(rest, 2, 2)?.strip_prefix('-')?;
        Some(digits(rest, 2, 2)?.is_empty())
    };
    let with_time = || -> Option<bool> {
        let rest = digits(text, 4, 4)?.strip_prefix('-')?;
        let rest = digits(rest, 1, 2)?.strip_prefix('-')?;
        let rest = digits(rest, 1, 2)?;
        let rest = match rest.strip_prefix(['T', 't']) {
            Some(rest) => rest,
            None if rest.starts_with([' ', '\t']) => rest.trim_start_matches([' ', '\t']),
            None => return None,
        };
        let rest = digits(rest, 1, 2)?.strip_prefix(':')?;
        let rest = digits(rest, 2, 2)?.strip_prefix(':')?;
        let mut rest = digits(rest, 2, 2)?;
        if let Some(fraction) = rest.strip_prefix('.') {
            rest = digits(fraction, 0, usize::MAX)?;
        }
        let zone = rest.trim_start_matches([' ', '\t']);
        if zone.is_empty() || zone == "Z" {
            return Some(true);
        }
        let rest = digits(zone.strip_prefix(['+', '-'])?, 1, 2)?;
        Some(match rest.strip_prefix(':') {
            Some(minutes) => digits(minutes, 2, 2)?.is_empty(),
            None => rest.is_empty(),
        })
    };
    date_only() == Some(true) || with_time() == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pretty_tables_look_like_prettytable() {
        let rows = vec![
            vec![
                "1".to_owned(),
                "25165984".to_owned(),
                "no recovery".to_owned(),
            ],
            vec!["2".to_owned(), "33554592".to_owned(), String::new()],
        ];
        let text = pretty_table(
            None,
            &["TL", "LSN", "Reason"],
            &[Align::Right, Align::Right, Align::Left],
            &rows,
        );
        assert_eq!(
            text,
            "\
+----+----------+-------------+
| TL |      LSN | Reason      |
+----+----------+-------------+
|  1 | 25165984 | no recovery |
|  2 | 33554592 |             |
+----+----------+-------------+"
        );
    }

    #[test]
    fn multi_line_cells_rule_every_row_and_titles_overwrite_the_top_rule() {
        let rows = vec![
            vec!["pg0".to_owned(), String::new()],
            vec!["pg1".to_owned(), "a: 1\nb: 2".to_owned()],
        ];
        let text = pretty_table(
            Some(" Cluster: x "),
            &["Member", "Tags"],
            &[Align::Left, Align::Left],
            &rows,
        );
        assert_eq!(
            text,
            "\
+ Cluster: x ---+
| Member | Tags |
+--------+------+
| pg0    |      |
+--------+------+
| pg1    | a: 1 |
|        | b: 2 |
+--------+------+"
        );
    }

    #[test]
    fn a_title_longer_than_the_table_is_cut() {
        let rows = vec![vec!["pg0".to_owned(), String::new()]];
        let text = pretty_table(
            Some(" Cluster: a-very-long-cluster-name (7268616322854375442) "),
            &["Member", "Tags"],
            &[Align::Left, Align::Left],
            &rows,
        );
        assert_eq!(text.lines().next(), Some("+ Cluster: a-ver+"));
    }

    #[test]
    fn an_empty_table_is_a_header_between_rules() {
        let text = pretty_table(None, &["TL", "LSN"], &[Align::Right, Align::Right], &[]);
        assert_eq!(
            text,
            "+----+-----+\n| TL | LSN |\n+----+-----+\n+----+-----+"
        );
    }

    #[test]
    fn json_is_spaced_and_escaped_like_python() {
        let value = json!([{"Member": "pg0", "TL": 2, "Tags": {"x": true}, "é": "a\"b\n"}]);
        assert_eq!(
            python_json(&value),
            r#"[{"Member": "pg0", "TL": 2, "Tags": {"x": true}, "\u00e9": "a\"b\n"}]"#
        );
    }

    /// Expected texts produced by `PyYAML` 6 `safe_dump(..., allow_unicode=True)`.
    #[test]
    fn yaml_quotes_what_pyyaml_quotes() {
        let value = json!({"b": {"x": [
            "a b", "*", "on", "10", "1.5", "", "a: b", "-x", "- y", "2024-01-01", "null",
            "x#y", "x #y", "#x", " s", "%x", "é", "0x10", "1_000", ".inf", "12:30", "a,b",
            "?x", "a:b", "a'b", "=", "<<", "2030-01-01T12:00:00+00:00",
            "2030-01-01T12:00:00+00:00 if version < 15.4", "2030-1-1 1:00:00.5 -01"
        ]}, "a": 1, "c": null, "d": true, "f": [], "g": {}, "h": [{"p": 1, "q": [1, 2]}]});
        assert_eq!(
            yaml(&value, false),
            "\
a: 1
b:
  x:
  - a b
  - '*'
  - 'on'
  - '10'
  - '1.5'
  - ''
  - 'a: b'
  - -x
  - '- y'
  - '2024-01-01'
  - 'null'
  - x#y
  - 'x #y'
  - '#x'
  - ' s'
  - '%x'
  - é
  - '0x10'
  - '1_000'
  - '.inf'
  - '12:30'
  - a,b
  - ?x
  - a:b
  - a'b
  - '='
  - '<<'
  - '2030-01-01T12:00:00+00:00'
  - 2030-01-01T12:00:00+00:00 if version < 15.4
  - '2030-1-1 1:00:00.5 -01'
c: null
d: true
f: []
g: {}
h:
- p: 1
  q:
  - 1
  - 2
"
        );
        let flow = json!({"b": {"x": ["a b", "*", "a,b", "[x]"]}, "a": 1, "h": [{"p": 1}]});
        assert_eq!(
            yaml(&flow, true),
            "{a: 1, b: {x: [a b, '*', 'a,b', '[x]']}, h: [{p: 1}]}\n"
        );
    }
}
