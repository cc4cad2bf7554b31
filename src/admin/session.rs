//! The admin console's session: a cookie holding a JWT (HS256, by `jsonwebtoken`) signed with
//! the API key the operator signed in with. Every node holds the same keys, so a session
//! works on every node with nothing shared; a key removed from the configuration verifies
//! nothing any more, so its sessions end with it. A sign-out is the one thing a token cannot
//! carry: the engine remembers those (`Hub::end_admin_session`). Pure: time is passed in.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The cookie's name.
pub const COOKIE: &str = "rt_admin";

/// The audience every session token names: a token minted for anything else (a client JWT
/// signed with a secret that happens to equal a key) is no session.
const AUDIENCE: &str = "boundary-realtime-admin";

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The session's id (random), the handle a sign-out ends.
    pub sid: String,
    /// The position of the signing key in `[grpc] api_keys` at sign-in.
    pub kid: usize,
    pub aud: String,
    /// Seconds since the epoch (JWT's unit); the session's exact end is `exp_ms`.
    pub exp: u64,
    pub exp_ms: i64,
}

/// A session that verified: its id, the position of its key now, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub key_index: usize,
    pub expires_at_ms: i64,
}

/// Why a cookie opens nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no session: sign in")]
    Missing,
    #[error("the session is not valid (its key may have been removed): sign in again")]
    Invalid,
    #[error("the session has ended: sign in again")]
    Expired,
}

/// The position of `key` among `keys`, compared in constant time with every key.
pub fn key_position(keys: &[SecretString], key: &str) -> Option<usize> {
    use subtle::ConstantTimeEq;
    let mut found = None;
    for (i, k) in keys.iter().enumerate() {
        if bool::from(k.expose_secret().as_bytes().ct_eq(key.as_bytes())) && found.is_none() {
            found = Some(i);
        }
    }
    found
}

/// A session token for the key at `key_index`, ending `ttl_ms` after `now_ms`.
pub fn mint(
    keys: &[SecretString],
    key_index: usize,
    id: String,
    now_ms: i64,
    ttl_ms: u64,
) -> Result<(String, Session), SessionError> {
    let key = keys.get(key_index).ok_or(SessionError::Invalid)?;
    let expires_at_ms = now_ms.saturating_add(ttl_ms as i64);
    let claims = Claims {
        sid: id.clone(),
        kid: key_index,
        aud: AUDIENCE.into(),
        exp: (expires_at_ms.max(0) as u64).div_ceil(1000),
        exp_ms: expires_at_ms,
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key_index.to_string());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(key.expose_secret().as_bytes()),
    )
    .map_err(|_| SessionError::Invalid)?;
    Ok((
        token,
        Session {
            id,
            key_index,
            expires_at_ms,
        },
    ))
}

/// The session `token` holds, if one of `keys` signed it and it has not ended by `now_ms`.
/// The key at the position it names is tried first, then the others (keys may have moved).
pub fn verify(keys: &[SecretString], token: &str, now_ms: i64) -> Result<Session, SessionError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    // The end is checked below against the time passed in, to the millisecond.
    validation.validate_exp = false;
    validation.leeway = 0;
    let named = jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|h| h.kid)
        .and_then(|k| k.parse::<usize>().ok())
        .unwrap_or(0);
    let order = std::iter::once(named).chain((0..keys.len()).filter(|i| *i != named));
    for i in order {
        let Some(key) = keys.get(i) else { continue };
        let decoding = DecodingKey::from_secret(key.expose_secret().as_bytes());
        if let Ok(data) = jsonwebtoken::decode::<Claims>(token, &decoding, &validation) {
            if data.claims.exp_ms <= now_ms {
                return Err(SessionError::Expired);
            }
            return Ok(Session {
                id: data.claims.sid,
                key_index: i,
                expires_at_ms: data.claims.exp_ms,
            });
        }
    }
    Err(SessionError::Invalid)
}

/// The session cookie's value in a `Cookie` header, if there is one.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

/// The `Set-Cookie` value that starts a session (`max_age_ms` from now) or, with `None`, ends
/// it. `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it),
/// scoped to the console's path, `Secure` when asked.
pub fn set_cookie(path: &str, value: Option<(&str, u64)>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some((token, max_age_ms)) => format!(
            "{COOKIE}={token}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            max_age_ms / 1000
        ),
        None => format!("{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<SecretString> {
        k.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn a_session_verifies_until_it_ends_and_names_its_key() {
        let ks = keys(&["first-key-0123456789", "second-key-0123456789"]);
        let (token, s) = mint(&ks, 1, "sid1".into(), 1_000_000, 60_000).unwrap();
        assert_eq!(s.expires_at_ms, 1_060_000);
        assert!(!token.contains("second-key"));
        let v = verify(&ks, &token, 1_059_999).unwrap();
        assert_eq!(
            v,
            Session {
                id: "sid1".into(),
                key_index: 1,
                expires_at_ms: 1_060_000
            }
        );
        assert_eq!(verify(&ks, &token, 1_060_000), Err(SessionError::Expired));
    }

    #[test]
    fn removing_the_key_ends_its_sessions_and_moved_keys_still_verify() {
        let ks = keys(&["first-key-0123456789", "second-key-0123456789"]);
        let (token, _) = mint(&ks, 1, "s".into(), 0, 60_000).unwrap();
        // The second key moved to the first position: still its session, named where it is.
        let moved = keys(&["second-key-0123456789"]);
        assert_eq!(verify(&moved, &token, 1).unwrap().key_index, 0);
        // The key is gone: nothing verifies.
        let gone = keys(&["first-key-0123456789", "third-key-0123456789"]);
        assert_eq!(verify(&gone, &token, 1), Err(SessionError::Invalid));
    }

    #[test]
    fn a_tampered_or_foreign_token_is_no_session() {
        let ks = keys(&["first-key-0123456789"]);
        let (token, _) = mint(&ks, 0, "s".into(), 0, 60_000).unwrap();
        let mut bad = token.clone();
        bad.pop();
        assert_eq!(verify(&ks, &bad, 1), Err(SessionError::Invalid));
        assert_eq!(verify(&ks, "garbage", 1), Err(SessionError::Invalid));
        // A client token signed with the same bytes but for another audience.
        #[derive(Serialize)]
        struct Other {
            sub: String,
            exp: u64,
        }
        let other = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Other {
                sub: "x".into(),
                exp: u64::MAX / 2,
            },
            &EncodingKey::from_secret(b"first-key-0123456789"),
        )
        .unwrap();
        assert_eq!(verify(&ks, &other, 1), Err(SessionError::Invalid));
    }

    #[test]
    fn keys_are_found_by_position_and_cookies_are_read_and_written() {
        let ks = keys(&["first-key-0123456789", "second-key-0123456789"]);
        assert_eq!(key_position(&ks, "second-key-0123456789"), Some(1));
        assert_eq!(key_position(&ks, "second-key"), None);
        assert_eq!(
            from_cookie_header("a=1; rt_admin=abc.def ; b=2"),
            Some("abc.def")
        );
        assert_eq!(from_cookie_header("rt_admin2=x"), None);
        assert_eq!(
            set_cookie("/admin", Some(("t", 28_800_000)), false),
            "rt_admin=t; Path=/admin; Max-Age=28800; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            set_cookie("/admin", None, true),
            "rt_admin=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict; Secure"
        );
    }
}
