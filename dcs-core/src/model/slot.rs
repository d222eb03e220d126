//! Replication slot names, identical to Patroni's.

use std::fmt::Write as _;

/// Patroni's replication slot name for a member: the name of the physical slot the
/// primary keeps for that member (and that `/status.slots` and `retain_slots` refer to).
///
/// Identical to `patroni.dcs.slot_name_from_member_name`: the name is lowercased with
/// Unicode rules (`İ` becomes `i` + U+0307, a word-final `Σ` becomes `ς`), `-` and `.`
/// become `_`, every other character outside `[a-z0-9_]` becomes `u` followed by its code
/// point in decimal, zero-padded to at least four digits, and the result is cut to 63
/// characters (Postgres's `NAMEDATALEN - 1`). Different names can map to the same slot;
/// Patroni only logs that, and so must the caller.
///
/// Caveat: lowercasing follows the Unicode version of the runtime, and Patroni's depends
/// on its Python (3.11 has Unicode 14, Rust 1.95 has 17). A name with a capital letter
/// that gained a lowercase mapping in between (e.g. U+A7CB) gets a different slot name
/// than Patroni on an older Python gives it; every other name maps identically.
#[must_use]
pub fn slot_name_from_member_name(member_name: &str) -> String {
    let mut slot = String::with_capacity(member_name.len());
    // Every pushed character is ASCII, so the 63-character cut is a byte cut.
    for c in member_name.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' => slot.push(c),
            '-' | '.' => slot.push('_'),
            _ => write!(slot, "u{:04}", u32::from(c)).expect("writing to a String cannot fail"),
        }
        if slot.len() >= 63 {
            break;
        }
    }
    slot.truncate(63);
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row was produced by Patroni itself:
    /// `from patroni.dcs import slot_name_from_member_name` (Patroni 3.0.2 on Python 3.11;
    /// the function is unchanged in 4.x).
    const PATRONI: &[(&str, &str)] = &[
        ("postgresql0", "postgresql0"),
        ("PG-Node.1", "pg_node_1"),
        ("pg_node_2", "pg_node_2"),
        ("", ""),
        ("\u{130}stanbul", "iu0775stanbul"),
        ("stra\u{df}e", "strau0223e"),
        ("\u{3a3}\u{391}\u{3a3}", "u0963u0945u0962"),
        ("node \u{3a3}", "nodeu0032u0963"),
        (
            "\u{38c}\u{3a3}\u{39f}\u{3a3}.\u{3a3}\u{391}",
            "u0972u0963u0959u0963_u0963u0945",
        ),
        ("\u{1c5}ungla", "u0454ungla"),
        ("x\u{1f600}y", "xu128512y"),
        ("\u{65e5}\u{672c}", "u26085u26412"),
        ("a/b", "au0047b"),
        ("a b", "au0032b"),
        ("\u{fb01}", "u64257"),
        ("\u{212a}", "k"),
        ("\u{2126}", "u0969"),
        ("\u{c5}", "u0229"),
        ("\u{1fbc}", "u8115"),
        ("\u{1e9e}", "u0223"),
        ("\u{390}", "u0912"),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        (
            "Node-\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            "node_u0233u0233u0233u0233u0233u0233u0233u0233u0233u0233u0233u02",
        ),
        ("tab\u{9}name", "tabu0009name"),
        ("null\u{0}byte", "nullu0000byte"),
        ("MiXeD-CaSe.Host.Name", "mixed_case_host_name"),
        ("\u{ff21}\u{ff22}\u{ff23}", "u65345u65346u65347"),
        ("\u{2177}", "u8567"),
        ("\u{24b6}", "u9424"),
        (
            "A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-A-",
            "a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a_a",
        ),
        ("pod-0.svc.cluster.local", "pod_0_svc_cluster_local"),
        ("\u{c9}COLE", "u0233cole"),
        ("\u{345}", "u0837"),
        ("\u{1c4}", "u0454"),
    ];

    #[test]
    fn slot_names_match_patroni() {
        for (member, slot) in PATRONI {
            assert_eq!(
                slot_name_from_member_name(member),
                *slot,
                "member {member:?}"
            );
        }
    }

    #[test]
    fn slot_names_are_valid_postgres_names() {
        for (member, _) in PATRONI {
            let slot = slot_name_from_member_name(member);
            assert!(slot.len() <= 63);
            assert!(
                slot.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
    }
}
