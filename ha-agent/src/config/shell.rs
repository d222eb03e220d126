//! Command lines in the configuration (`postgresql.callbacks`, `pre_promote`,
//! `before_stop`): split into words the way Patroni's `shlex.split` does, and run without
//! a shell.

/// Splits a command line as Python's `shlex.split` does in POSIX mode: whitespace
/// separates words, single quotes keep everything, double quotes keep everything but
/// `\` before `"`, `\`, `$` or a backquote, and a backslash outside quotes escapes the
/// next character. `None` for an unterminated quote or a trailing backslash.
#[must_use]
pub fn split_command(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => word.push(c),
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_shlex() {
        let cases = [
            ("/usr/local/bin/vip.sh", Some(vec!["/usr/local/bin/vip.sh"])),
            ("  a  b\tc ", Some(vec!["a", "b", "c"])),
            ("a 'b c' \"d \\\"e\\\"\"", Some(vec!["a", "b c", "d \"e\""])),
            ("a\\ b c", Some(vec!["a b", "c"])),
            ("x''", Some(vec!["x"])),
            ("''", Some(vec![""])),
            ("\"a\\nb\"", Some(vec!["a\\nb"])),
            ("'open", None),
            ("\"open", None),
            ("trailing\\", None),
            ("", Some(vec![])),
        ];
        for (line, expected) in cases {
            let expected =
                expected.map(|words| words.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(split_command(line), expected, "{line:?}");
        }
    }
}
