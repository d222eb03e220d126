//! `PATCH /config`'s merge: Patroni's `patch_config`, a JSON merge patch (RFC 7396) with
//! Patroni's two deviations kept, so that `patronictl edit-config` ends with the same
//! `config` value against either agent.

use crate::python::python_str;
use serde_json::{Map, Value};

/// Applies `patch` to `config` in place and says whether anything changed.
///
/// As RFC 7396: `null` deletes a key, an object merges into an object, anything else
/// replaces. As Patroni, unlike the RFC:
/// * a value that reads the same as the stored one in Python's `str()` (`10` and `"10"`,
///   `true` and `"True"`) changes nothing, so a patch that only restates a setting writes
///   nothing and cannot conflict;
/// * an object added under a new key is stored as given, `null`s inside included.
pub(super) fn patch_config(config: &mut Map<String, Value>, patch: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (name, value) in patch {
        match (value, config.get_mut(name)) {
            (Value::Null, _) => {
                // Python's `config.pop(name, None) is not None`: deleting a stored null
                // is not a change.
                changed |= config.shift_remove(name).is_some_and(|old| !old.is_null());
            }
            (Value::Object(inner), Some(Value::Object(current))) => {
                changed |= patch_config(current, inner);
            }
            (Value::Object(_), Some(current)) => {
                *current = value.clone();
                changed = true;
            }
            (_, Some(current)) => {
                if python_str(current) != python_str(value) {
                    *current = value.clone();
                    changed = true;
                }
            }
            (_, None) => {
                config.insert(name.clone(), value.clone());
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn patches_merge_delete_and_replace_like_patroni() {
        let stored = json!({
            "ttl": 30,
            "loop_wait": 10,
            "postgresql": {"parameters": {"max_connections": 100, "work_mem": "4MB"}, "use_pg_rewind": true},
            "tags": ["a"],
            "standby_cluster": {"host": "x"},
        });
        let table: &[(&str, Value, bool, Value)] = &[
            (
                "a nested setting changes, its siblings stay",
                json!({"postgresql": {"parameters": {"max_connections": 200}}}),
                true,
                json!({"ttl": 30, "loop_wait": 10,
                       "postgresql": {"parameters": {"max_connections": 200, "work_mem": "4MB"}, "use_pg_rewind": true},
                       "tags": ["a"], "standby_cluster": {"host": "x"}}),
            ),
            (
                "null deletes, deep and shallow",
                json!({"postgresql": {"parameters": {"work_mem": null}}, "standby_cluster": null}),
                true,
                json!({"ttl": 30, "loop_wait": 10,
                       "postgresql": {"parameters": {"max_connections": 100}, "use_pg_rewind": true},
                       "tags": ["a"]}),
            ),
            (
                "deleting what is absent is no change",
                json!({"pause": null, "postgresql": {"parameters": {"shared_buffers": null}}}),
                false,
                stored.clone(),
            ),
            (
                "a value equal in Python's str() is no change",
                json!({"ttl": "30", "postgresql": {"use_pg_rewind": "True"}}),
                false,
                stored.clone(),
            ),
            (
                "a new key is added, nulls inside kept",
                json!({"pause": true, "slots": {"s": {"type": "physical", "x": null}}}),
                true,
                json!({"ttl": 30, "loop_wait": 10,
                       "postgresql": {"parameters": {"max_connections": 100, "work_mem": "4MB"}, "use_pg_rewind": true},
                       "tags": ["a"], "standby_cluster": {"host": "x"},
                       "pause": true, "slots": {"s": {"type": "physical", "x": null}}}),
            ),
            (
                "an object replaces a scalar, a scalar replaces an object, lists replace",
                json!({"ttl": {"x": 1}, "standby_cluster": 5, "tags": ["b"]}),
                true,
                json!({"ttl": {"x": 1}, "loop_wait": 10,
                       "postgresql": {"parameters": {"max_connections": 100, "work_mem": "4MB"}, "use_pg_rewind": true},
                       "tags": ["b"], "standby_cluster": 5}),
            ),
        ];
        for (name, patch, changed, expected) in table {
            let mut config = object(stored.clone());
            assert_eq!(
                patch_config(&mut config, &object(patch.clone())),
                *changed,
                "{name}"
            );
            assert_eq!(Value::Object(config), *expected, "{name}");
        }
    }

    #[test]
    fn key_order_is_kept_when_a_setting_changes() {
        let mut config = object(json!({"b": 1, "a": 2, "c": 3}));
        assert!(patch_config(&mut config, &object(json!({"a": 5, "d": 4}))));
        assert_eq!(
            serde_json::to_string(&config).unwrap(),
            r#"{"b":1,"a":5,"c":3,"d":4}"#
        );
    }
}
