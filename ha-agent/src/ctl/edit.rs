//! `edit-config`'s pure parts: `--set`/`--pg` pairs, `--apply` patches, and the diff shown
//! before writing.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Lines of context around each change, as difflib's default.
const CONTEXT: usize = 3;

/// Applies `key.path=value` pairs as patronictl's `apply_config_changes` does: the path is
/// split on dots (except after `postgresql.parameters.`, where the rest is one parameter
/// name, since GUCs may contain dots), the value is read as YAML, `null` (or nothing)
/// removes the key, and mappings left empty by a removal disappear.
pub(crate) fn apply_pairs(data: &mut Map<String, Value>, pairs: &[String]) -> Result<(), String> {
    for pair in pairs {
        let Some((path, text)) = pair.split_once('=').filter(|_| !pair.is_empty()) else {
            return Err(format!("Invalid parameter setting {pair}"));
        };
        let value = yaml_value(text).map_err(|e| format!("Invalid value in {pair}: {e}"))?;
        let mut keys: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
        if keys.len() > 2 && keys[0] == "postgresql" && keys[1] == "parameters" {
            let name = keys.split_off(2).join(".");
            keys.push(name);
        }
        set_path(data, &keys, value);
    }
    Ok(())
}

fn set_path(config: &mut Map<String, Value>, path: &[String], value: Value) {
    let (key, rest) = path.split_first().expect("split yields at least one key");
    if rest.is_empty() {
        if value.is_null() {
            config.remove(key);
        } else {
            config.insert(key.clone(), value);
        }
        return;
    }
    if !config.get(key).is_some_and(Value::is_object) {
        config.insert(key.clone(), Value::Object(Map::new()));
    }
    let Some(Value::Object(child)) = config.get_mut(key) else {
        unreachable!("inserted above");
    };
    set_path(child, rest, value);
    if child.is_empty() {
        config.remove(key);
    }
}

/// A YAML value as `PyYAML`'s `safe_load` would give it for a command-line value: empty
/// text is `null`.
pub(crate) fn yaml_value(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

/// Patroni's `patch_config`: `null` removes a key, mappings merge recursively, anything
/// else replaces.
pub(crate) fn patch(config: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (name, value) in patch {
        match value {
            Value::Null => {
                config.remove(name);
            }
            Value::Object(inner) => match config.get_mut(name) {
                Some(Value::Object(existing)) => self::patch(existing, inner),
                _ => {
                    config.insert(name.clone(), value.clone());
                }
            },
            _ => {
                config.insert(name.clone(), value.clone());
            }
        }
    }
}

/// A unified diff of two texts, as Python's `difflib.unified_diff` with empty file names
/// and three lines of context prints it; empty when equal.
pub(crate) fn unified_diff(before: &str, after: &str) -> String {
    let a: Vec<&str> = before.trim_end_matches('\n').split('\n').collect();
    let b: Vec<&str> = after.trim_end_matches('\n').split('\n').collect();
    let ops = diff_ops(&a, &b);
    if ops.iter().all(|op| matches!(op, Op::Same(..))) {
        return String::new();
    }
    let mut out = String::from("--- \n+++ \n");
    // Group changes whose context overlaps into hunks.
    let changed: Vec<usize> = (0..ops.len())
        .filter(|i| !matches!(ops[*i], Op::Same(..)))
        .collect();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &i in &changed {
        match groups.last_mut() {
            Some((_, end)) if i <= *end + 2 * CONTEXT + 1 => *end = i,
            _ => groups.push((i, i)),
        }
    }
    for (first, last) in groups {
        let start = first.saturating_sub(CONTEXT);
        let end = (last + CONTEXT + 1).min(ops.len());
        let hunk = &ops[start..end];
        let (a_start, b_start) = positions(&ops[..start]);
        let a_len = hunk
            .iter()
            .filter(|op| !matches!(op, Op::Insert(_)))
            .count();
        let b_len = hunk
            .iter()
            .filter(|op| !matches!(op, Op::Delete(_)))
            .count();
        writeln!(
            out,
            "@@ -{} +{} @@",
            range(a_start, a_len),
            range(b_start, b_len)
        )
        .expect("writing to a String cannot fail");
        for op in hunk {
            match op {
                Op::Same(i) => writeln!(out, " {}", a[*i]),
                Op::Delete(i) => writeln!(out, "-{}", a[*i]),
                Op::Insert(j) => writeln!(out, "+{}", b[*j]),
            }
            .expect("writing to a String cannot fail");
        }
    }
    out
}

/// difflib's `_format_range_unified`.
fn range(start: usize, length: usize) -> String {
    match length {
        1 => format!("{}", start + 1),
        0 => format!("{start},0"),
        _ => format!("{},{length}", start + 1),
    }
}

fn positions(ops: &[Op]) -> (usize, usize) {
    ops.iter().fold((0, 0), |(a, b), op| match op {
        Op::Same(..) => (a + 1, b + 1),
        Op::Delete(_) => (a + 1, b),
        Op::Insert(_) => (a, b + 1),
    })
}

#[derive(Debug)]
enum Op {
    Same(usize),
    Delete(usize),
    Insert(usize),
}

/// A longest-common-subsequence edit script; deletions before insertions in a change.
fn diff_ops(old: &[&str], new: &[&str]) -> Vec<Op> {
    // lcs[i][j]: LCS length of old[i..] and new[j..].
    let mut lcs = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::new();
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            ops.push(Op::Same(i));
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(Op::Delete(i));
            i += 1;
        } else {
            ops.push(Op::Insert(j));
            j += 1;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn set_pairs_follow_dotted_paths_and_null_removes() {
        let mut data = map(json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB"}}}));
        apply_pairs(
            &mut data,
            &[
                "ttl=40".to_owned(),
                "synchronous_mode=true".to_owned(),
                "postgresql.parameters.auto_explain.log_min_duration=100".to_owned(),
                "postgresql.parameters.work_mem=null".to_owned(),
                "standby_cluster.host= ".to_owned(),
                "a.b.c=[1, x]".to_owned(),
            ],
        )
        .unwrap();
        assert_eq!(
            Value::Object(data),
            json!({
                "ttl": 40,
                "postgresql": {"parameters": {"auto_explain.log_min_duration": 100}},
                "synchronous_mode": true,
                "a": {"b": {"c": [1, "x"]}}
            })
        );
    }

    #[test]
    fn removing_the_last_parameter_removes_the_emptied_sections() {
        let mut data = map(json!({"postgresql": {"parameters": {"work_mem": "4MB"}}}));
        apply_pairs(&mut data, &["postgresql.parameters.work_mem=".to_owned()]).unwrap();
        assert_eq!(Value::Object(data), json!({}));
    }

    #[test]
    fn a_pair_without_equals_is_refused() {
        let mut data = Map::new();
        let error = apply_pairs(&mut data, &["ttl".to_owned()]).unwrap_err();
        assert_eq!(error, "Invalid parameter setting ttl");
        assert!(apply_pairs(&mut data, &[String::new()]).is_err());
    }

    #[test]
    fn patches_merge_mappings_and_null_deletes() {
        let mut data = map(json!({"ttl": 30, "postgresql": {"a": 1, "b": 2}, "pause": true}));
        patch(
            &mut data,
            &map(json!({"postgresql": {"b": null, "c": 3}, "pause": null, "ttl": 20})),
        );
        assert_eq!(
            Value::Object(data),
            json!({"ttl": 20, "postgresql": {"a": 1, "c": 3}})
        );
    }

    /// Expected text from Python's `difflib.unified_diff` on the same lines.
    #[test]
    fn diffs_look_like_difflib() {
        let before = "a: 1\nb: 2\nc: 3\nd: 4\ne: 5\nf: 6\ng: 7\nh: 8\ni: 9\nj: 10\n";
        let after = "a: 1\nb: 20\nc: 3\nd: 4\ne: 5\nf: 6\ng: 7\nh: 8\ni: 9\nj: 10\nk: 11\n";
        assert_eq!(
            unified_diff(before, after),
            "--- \n+++ \n@@ -1,5 +1,5 @@\n a: 1\n-b: 2\n+b: 20\n c: 3\n d: 4\n e: 5\n\
             @@ -8,3 +8,4 @@\n h: 8\n i: 9\n j: 10\n+k: 11\n"
        );
        assert_eq!(unified_diff(before, before), "");
        assert_eq!(
            unified_diff("{}\n", "ttl: 30\n"),
            "--- \n+++ \n@@ -1 +1 @@\n-{}\n+ttl: 30\n"
        );
    }
}
