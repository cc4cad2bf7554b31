//! The Origin check of a WebSocket upgrade, which stops cross-site WebSocket hijacking: a page
//! on another site cannot open a socket that carries the user's cookies or token.

/// Whether an upgrade with `origin` (the `Origin` header, if any) to `host` (the `Host`
/// header) may proceed, given the configured `allowed` origins.
///
/// - no `Origin` header (not a browser): allowed;
/// - `allowed` contains `*`: any origin;
/// - `allowed` non-empty: exact match (scheme, host and port; case-insensitive, no trailing
///   slash);
/// - `allowed` empty (default): only an origin whose host and port equal `host` (same host).
pub fn allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if !allowed.is_empty() {
        return allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    }
    let Some(host) = host else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    normalize(authority, default_port) == normalize(host, default_port)
}

/// `host[:port]` with the port made explicit and the host lowercased.
fn normalize(authority: &str, default_port: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    // an IPv6 literal keeps its brackets: "[::1]:8080"
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    if has_port {
        authority
    } else {
        format!("{authority}:{default_port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn same_host_by_default() {
        let none = list(&[]);
        assert!(allowed(None, Some("rt.example.com"), &none));
        assert!(allowed(
            Some("https://rt.example.com"),
            Some("rt.example.com:443"),
            &none
        ));
        assert!(allowed(
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            &none
        ));
        assert!(allowed(
            Some("http://[::1]:8080"),
            Some("[::1]:8080"),
            &none
        ));
        assert!(allowed(
            Some("HTTP://RT.example.com"),
            Some("rt.example.com"),
            &none
        ));
        assert!(!allowed(
            Some("https://evil.example"),
            Some("rt.example.com"),
            &none
        ));
        assert!(!allowed(
            Some("http://127.0.0.1:9999"),
            Some("127.0.0.1:8080"),
            &none
        ));
        assert!(!allowed(Some("null"), Some("rt.example.com"), &none));
        assert!(!allowed(Some("https://rt.example.com"), None, &none));
    }

    #[test]
    fn exact_matches_and_explicit_star() {
        let l = list(&["https://app.example.com", "http://localhost:3000/"]);
        assert!(allowed(
            Some("https://app.example.com"),
            Some("rt.example.com"),
            &l
        ));
        assert!(allowed(
            Some("http://localhost:3000"),
            Some("rt.example.com"),
            &l
        ));
        assert!(!allowed(
            Some("https://app.example.com:8443"),
            Some("rt.example.com"),
            &l
        ));
        assert!(
            !allowed(Some("https://rt.example.com"), Some("rt.example.com"), &l),
            "a list replaces same-host"
        );
        assert!(allowed(Some("https://anything.test"), None, &list(&["*"])));
    }
}
