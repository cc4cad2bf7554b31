//! Where a WebSocket upgrade's token comes from: the `token` query parameter first, then an
//! `Authorization: Bearer` header; neither means first-frame authentication follows.

/// Why the upgrade request's token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("the Authorization header must be \"Bearer <token>\"")]
    NotBearer,
    #[error("the query string is not valid")]
    BadQuery,
}

/// The token of an upgrade request, from its raw query string and `Authorization` header
/// bytes. `Ok(None)`: no token, authenticate with the first frame.
pub fn extract(
    query: Option<&str>,
    authorization: Option<&[u8]>,
) -> Result<Option<String>, ExtractError> {
    if let Some(q) = query {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(q).map_err(|_| ExtractError::BadQuery)?;
        if let Some((_, t)) = pairs.into_iter().find(|(k, _)| k == "token") {
            return Ok(Some(t));
        }
    }
    match authorization {
        None => Ok(None),
        Some(raw) => {
            let value = std::str::from_utf8(raw).map_err(|_| ExtractError::NotBearer)?;
            let value = value.trim();
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(ExtractError::NotBearer);
            }
            Ok(Some(token.trim().to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_first_then_header() {
        assert_eq!(
            extract(Some("token=abc"), Some(b"Bearer xyz")),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            extract(Some("x=1"), Some(b"Bearer xyz")),
            Ok(Some("xyz".into()))
        );
        assert_eq!(extract(None, Some(b"bearer  xyz ")), Ok(Some("xyz".into())));
        assert_eq!(
            extract(Some("a=1&token=t%2Bu"), None),
            Ok(Some("t+u".into()))
        );
        assert_eq!(
            extract(Some("token="), None),
            Ok(Some(String::new())),
            "empty: refused later as 401"
        );
        assert_eq!(extract(None, None), Ok(None));
        assert_eq!(extract(Some(""), None), Ok(None));
    }

    #[test]
    fn a_non_bearer_header_is_an_error() {
        assert_eq!(
            extract(None, Some(b"Basic dXNlcg==")),
            Err(ExtractError::NotBearer)
        );
        assert_eq!(
            extract(None, Some(b"Bearer")),
            Ok(Some(String::new())),
            "empty: refused later as 401"
        );
        assert_eq!(extract(None, Some(b"")), Err(ExtractError::NotBearer));
        assert_eq!(
            extract(None, Some(b"\xff\xfe")),
            Err(ExtractError::NotBearer)
        );
    }
}
