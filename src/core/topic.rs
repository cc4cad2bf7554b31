//! Topics, purely: names and the subscription patterns of the `topics` claim. A topic's kept
//! publications are [`super::history`]; this node's subscribers, [`super::topic_table`].

use super::CoreError;

/// The longest topic name.
pub const MAX_TOPIC_LEN: usize = 255;

/// Checks a topic name: 1..255 characters of `[A-Za-z0-9._:@/-]`.
pub fn validate_name(field: &str, topic: &str) -> Result<(), CoreError> {
    if topic.is_empty() {
        return Err(CoreError::invalid(field, "is required"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(CoreError::invalid(
            field,
            format!("is longer than {MAX_TOPIC_LEN} characters"),
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '/' | '-')))
    {
        return Err(CoreError::invalid(
            field,
            format!("contains {c:?}; allowed are A-Z a-z 0-9 . _ : @ / -"),
        ));
    }
    Ok(())
}

/// Whether `pattern` matches `topic`. Segments are separated by `:`; a `*` segment matches
/// exactly one segment; a trailing `**` segment matches one or more remaining segments; any
/// other segment matches itself only.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split(':').peekable();
    let mut t = topic.split(':');
    while let Some(seg) = p.next() {
        if seg == "**" && p.peek().is_none() {
            return t.next().is_some();
        }
        match t.next() {
            Some(ts) if seg == "*" || seg == ts => continue,
            _ => return false,
        }
    }
    t.next().is_none()
}

/// Whether any of `patterns` matches `topic`.
pub fn allowed<'a>(patterns: impl IntoIterator<Item = &'a String>, topic: &str) -> bool {
    patterns.into_iter().any(|p| matches(p, topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in [
            "orders:42",
            "a",
            "user@example.com/x-y_z.1",
            &"x".repeat(255),
        ] {
            assert!(validate_name("topic", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a*", "é", &"x".repeat(256)] {
            assert!(validate_name("topic", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns() {
        assert!(matches("orders:42", "orders:42"));
        assert!(!matches("orders:42", "orders:43"));
        assert!(matches("orders:*", "orders:42"));
        assert!(!matches("orders:*", "orders:42:items"));
        assert!(!matches("orders:*", "orders"));
        assert!(matches("orders:**", "orders:42"));
        assert!(matches("orders:**", "orders:42:items"));
        assert!(!matches("orders:**", "orders"));
        assert!(matches("*:public", "news:public"));
        assert!(matches("**", "anything:at:all"));
        assert!(
            !matches("orders:**:x", "orders:a:x"),
            "** only counts at the end"
        );
        assert!(
            matches("orders:**:x", "orders:**:x"),
            "elsewhere it is a literal"
        );
        assert!(!matches("", "a"));
    }
}
