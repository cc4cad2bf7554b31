//! Connection and message identifiers.
//!
//! A connection id is `<node_id>.<seq>`, where `seq` is 16 lowercase hex digits of a
//! per-node counter. Any node can tell from the id alone which node holds the connection, and
//! ordering by `seq` gives the stable order that pagination relies on.

/// Characters allowed in a node id: it is embedded in connection ids before the `.`.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1..64 characters".into());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("may contain only A-Z a-z 0-9 - _".into());
    }
    Ok(())
}

/// Turns any host name into a valid node id prefix (dots and other characters become `-`).
pub fn sanitize_node_id(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if s.is_empty() {
        s.push_str("node");
    }
    s
}

/// Formats a connection id from its node and sequence number.
pub fn format_conn_id(node_id: &str, seq: u64) -> String {
    format!("{node_id}.{seq:016x}")
}

/// Splits a connection id into its node id and sequence number; `None` when malformed.
pub fn parse_conn_id(id: &str) -> Option<(&str, u64)> {
    let (node, seq) = id.rsplit_once('.')?;
    if node.is_empty() || seq.len() != 16 {
        return None;
    }
    let seq = u64::from_str_radix(seq, 16).ok()?;
    Some((node, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_id_round_trips() {
        let id = format_conn_id("node-1", 0xabc);
        assert_eq!(id, "node-1.0000000000000abc");
        assert_eq!(parse_conn_id(&id), Some(("node-1", 0xabc)));
    }

    #[test]
    fn malformed_conn_ids_are_rejected() {
        for bad in [
            "",
            "node",
            ".0000000000000001",
            "n.1",
            "n.zzzzzzzzzzzzzzzz",
            "n.00000000000000011",
        ] {
            assert_eq!(parse_conn_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn node_ids_are_checked_and_sanitized() {
        assert!(validate_node_id("web-1_a").is_ok());
        assert!(validate_node_id("web.1").is_err());
        assert!(validate_node_id("").is_err());
        assert_eq!(sanitize_node_id("host.example.com"), "host-example-com");
        assert_eq!(sanitize_node_id(""), "node");
        assert!(validate_node_id(&sanitize_node_id("ä.b c")).is_ok());
    }
}
