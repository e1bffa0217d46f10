//! Removing secrets from text before it reaches an error, a log line or an event.

/// Replaces the password of every `scheme://user:password@host` in `text` with `***`,
/// and the value of every `password=...` key (libpq style) likewise.
///
/// ```
/// use poolvisor_actors::redact;
/// assert_eq!(
///     redact("connect to postgres://app:s3cret@db:5432/x failed"),
///     "connect to postgres://app:***@db:5432/x failed"
/// );
/// assert_eq!(redact("host=db password=s3cret user=app"), "host=db password=*** user=app");
/// ```
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at_sign) => {
                let userinfo = &authority[..at_sign];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at_sign..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_key_values(&out)
}

fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find_ascii_ci(rest, "password") {
        let after = &rest[at + "password".len()..];
        let sep_len = after
            .find(|c: char| !(c == ' ' || c == '=' || c == ':' || c == '"'))
            .unwrap_or(after.len());
        let sep = &after[..sep_len];
        out.push_str(&rest[..at + "password".len()]);
        out.push_str(sep);
        let mut value_part = &after[sep_len..];
        if let Some(inner) = value_part.strip_prefix("Some(\"") {
            out.push_str("Some(\"");
            value_part = inner;
        }
        if sep.contains('=') || sep.contains(':') {
            let end = value_part
                .find(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '}' || c == ';')
                .unwrap_or(value_part.len());
            if end > 0 {
                out.push_str("***");
            }
            rest = &value_part[end..];
        } else {
            rest = value_part;
        }
    }
    out.push_str(rest);
    out
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn removes_passwords_and_keeps_the_rest() {
        let cases = [
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "postgres://root@127.0.0.1/test",
                "postgres://root@127.0.0.1/test",
            ),
            (
                "a http://u:p@x?q and b://v:w@y#z",
                "a http://u:***@x?q and b://v:***@y#z",
            ),
            ("Password: \"hunter2\", next", "Password: \"***\", next"),
            ("no secrets here", "no secrets here"),
            ("pw p@ss://:@", "pw p@ss://:***@"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn never_leaks_a_sentinel() {
        let sentinel = "S3NT1NEL";
        for text in [
            format!("postgres://u:{sentinel}@h/db"),
            format!("host=h password={sentinel}"),
            format!("Config {{ password: Some(\"{sentinel}\") }}"),
            format!("x://a:{sentinel}@b/c y://d:{sentinel}@e"),
        ] {
            assert!(
                !redact(&text).contains(sentinel),
                "{text} -> {}",
                redact(&text)
            );
        }
    }
}
