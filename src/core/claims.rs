//! JWT verification and the claims a connection carries.
//!
//! The algorithm is pinned: a token whose header names any other algorithm (including `none`,
//! which jsonwebtoken does not even parse) is refused, and an HS* key can only be built from a
//! secret, so an RS*/ES* public key can never be used as an HMAC secret. `exp` and `nbf` are
//! checked here against a `now` passed in by the caller, with `leeway_ms`.

use std::collections::BTreeMap;

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

/// Where the verification key comes from (the shell reads files; the core only parses).
#[derive(Clone)]
pub enum KeyMaterial {
    /// The shared secret of HS256/384/512.
    Secret(Vec<u8>),
    /// A PEM public key for RS*, PS*, ES* or EdDSA.
    PublicPem(Vec<u8>),
    /// Keys come from a JWKS document, given to [`Verifier::verify_with`] at each call.
    Jwks,
}

/// Everything needed to verify tokens.
#[derive(Clone)]
pub struct VerifierConfig {
    pub algorithm: Algorithm,
    pub key: KeyMaterial,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub require_exp: bool,
    pub leeway_ms: u64,
}

/// A configuration that cannot verify anything (bad PEM, key of the wrong kind).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// Why a token was refused. The text is safe to show a client: it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("invalid signature")]
    BadSignature,
    #[error("token algorithm is not the configured one")]
    WrongAlgorithm,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    #[error("invalid claim {0}")]
    InvalidClaim(&'static str),
    #[error("unknown key id")]
    UnknownKey,
}

impl AuthError {
    /// A short label for metrics (`handshakes_total{outcome=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongAlgorithm => "wrong_algorithm",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::MissingClaim(_) | AuthError::InvalidClaim(_) => "bad_claims",
            AuthError::UnknownKey => "unknown_key",
        }
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub roles: Vec<String>,
    pub topics: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// `exp` in unix milliseconds, `None` when the token has no `exp`.
    pub expires_at_ms: Option<i64>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    #[serde(default)]
    roles: Option<Value>,
    #[serde(default)]
    topics: Option<Value>,
    #[serde(default)]
    meta: Option<Value>,
}

/// Verification keys from a JWKS document, by `kid`, keeping only keys usable with the pinned
/// algorithm (an `oct` key can never become an HMAC secret for an RS256 configuration).
pub struct KeySet {
    keys: std::collections::HashMap<String, DecodingKey>,
    /// A key without `kid`, used for tokens without `kid` when it is the only key.
    only: Option<DecodingKey>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys":[...]}`) for algorithm `alg`.
    pub fn from_jwks(json: &[u8], alg: Algorithm) -> Result<KeySet, KeyError> {
        use jsonwebtoken::jwk::JwkSet;
        let set: JwkSet = serde_json::from_slice(json)
            .map_err(|e| KeyError(format!("not a JWKS document: {e}")))?;
        let family = alg.family();
        let mut keys = std::collections::HashMap::new();
        let mut usable = Vec::new();
        for jwk in &set.keys {
            if let Some(a) = jwk.common.key_algorithm {
                if a != jsonwebtoken::jwk::KeyAlgorithm::from(alg) {
                    continue;
                }
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            if key.family() != family {
                continue;
            }
            if let Some(kid) = &jwk.common.key_id {
                keys.insert(kid.clone(), key.clone());
            }
            usable.push(key);
        }
        if usable.is_empty() {
            return Err(KeyError(format!("the JWKS has no key usable with {alg:?}")));
        }
        let only = if usable.len() == 1 {
            usable.pop()
        } else {
            None
        };
        Ok(KeySet { keys, only })
    }

    /// Keys usable by `kid`.
    pub fn len(&self) -> usize {
        self.keys.len().max(usize::from(self.only.is_some()))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None => self.only.as_ref(),
        }
    }
}

/// Verifies tokens against one pinned algorithm and key (or a [`KeySet`]).
pub struct Verifier {
    key: Option<DecodingKey>,
    validation: Validation,
    require_exp: bool,
    leeway_ms: i64,
}

impl Verifier {
    pub fn new(cfg: &VerifierConfig) -> Result<Self, KeyError> {
        use Algorithm::*;
        let alg = cfg.algorithm;
        let key = match (&cfg.key, alg) {
            (KeyMaterial::Jwks, HS256 | HS384 | HS512) => {
                return Err(KeyError(format!("{alg:?} uses a secret, not a JWKS")))
            }
            (KeyMaterial::Jwks, _) => None,
            (KeyMaterial::Secret(s), HS256 | HS384 | HS512) => {
                if s.is_empty() {
                    return Err(KeyError("the HS* secret is empty".into()));
                }
                Some(DecodingKey::from_secret(s))
            }
            (KeyMaterial::PublicPem(pem), RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => Some(
                DecodingKey::from_rsa_pem(pem)
                    .map_err(|e| KeyError(format!("not an RSA public key in PEM: {e}")))?,
            ),
            (KeyMaterial::PublicPem(pem), ES256 | ES384) => Some(
                DecodingKey::from_ec_pem(pem)
                    .map_err(|e| KeyError(format!("not an EC public key in PEM: {e}")))?,
            ),
            (KeyMaterial::PublicPem(pem), EdDSA) => Some(
                DecodingKey::from_ed_pem(pem)
                    .map_err(|e| KeyError(format!("not an Ed25519 public key in PEM: {e}")))?,
            ),
            (KeyMaterial::Secret(_), _) => {
                return Err(KeyError(format!(
                    "{alg:?} needs a public key, not a secret"
                )))
            }
            (KeyMaterial::PublicPem(_), _) => {
                return Err(KeyError(format!(
                    "{alg:?} needs a secret, not a public key"
                )))
            }
        };
        let mut validation = Validation::new(alg);
        // exp and nbf are checked in `verify` against the caller's clock, to the millisecond.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let mut required = vec!["sub"];
        if cfg.require_exp {
            required.push("exp");
        }
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Verifier {
            key,
            validation,
            require_exp: cfg.require_exp,
            leeway_ms: i64::try_from(cfg.leeway_ms).unwrap_or(i64::MAX),
        })
    }

    /// Verifies `token` at time `now_ms` (unix milliseconds) with the configured key.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Identity, AuthError> {
        match &self.key {
            Some(key) => self.verify_key(token, now_ms, key),
            None => Err(AuthError::UnknownKey),
        }
    }

    /// Verifies `token` with the key of `keys` that its header's `kid` names.
    pub fn verify_with(
        &self,
        token: &str,
        now_ms: i64,
        keys: &KeySet,
    ) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        self.check_algorithm(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| map_jwt_error(e.kind()))?;
        let key = keys
            .find(header.kid.as_deref())
            .ok_or(AuthError::UnknownKey)?;
        self.verify_key(token, now_ms, key)
    }

    fn verify_key(
        &self,
        token: &str,
        now_ms: i64,
        key: &DecodingKey,
    ) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        self.check_algorithm(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;
        let user_id = match claims.sub {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(_) => return Err(AuthError::InvalidClaim("sub")),
            None => return Err(AuthError::MissingClaim("sub")),
        };
        let expires_at_ms = match claims.exp {
            Some(v) => Some(numeric_date_ms(&v).ok_or(AuthError::InvalidClaim("exp"))?),
            None if self.require_exp => return Err(AuthError::MissingClaim("exp")),
            None => None,
        };
        if let Some(exp) = expires_at_ms {
            if now_ms >= exp.saturating_add(self.leeway_ms) {
                return Err(AuthError::Expired);
            }
        }
        if let Some(v) = claims.nbf {
            let nbf = numeric_date_ms(&v).ok_or(AuthError::InvalidClaim("nbf"))?;
            if now_ms.saturating_add(self.leeway_ms) < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        Ok(Identity {
            user_id,
            roles: string_list(claims.roles, "roles")?,
            topics: string_list(claims.topics, "topics")?,
            metadata: metadata(claims.meta)?,
            expires_at_ms,
        })
    }
}

impl Verifier {
    /// Refuses a token whose header names another algorithm than the pinned one, before
    /// anything else is read. The JWT library cannot even parse a header naming `none` (it is
    /// no algorithm of its), so without this an `alg: none` token would read as malformed.
    fn check_algorithm(&self, token: &str) -> Result<(), AuthError> {
        let Some(alg) = header_alg(token) else {
            return Ok(()); // unreadable: the library says how
        };
        let pinned = self
            .validation
            .algorithms
            .iter()
            .any(|a| format!("{a:?}") == alg);
        if pinned {
            Ok(())
        } else {
            Err(AuthError::WrongAlgorithm)
        }
    }
}

/// The `alg` a token's header names, if the header can be read.
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some(v.get("alg")?.as_str()?.to_owned())
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::WrongAlgorithm,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "sub" => AuthError::MissingClaim("sub"),
            "exp" => AuthError::MissingClaim("exp"),
            "iss" => AuthError::WrongIssuer,
            "aud" => AuthError::WrongAudience,
            _ => AuthError::Malformed("a required claim is missing".into()),
        },
        ErrorKind::InvalidSubject => AuthError::InvalidClaim("sub"),
        ErrorKind::Json(_) => AuthError::Malformed("claims are not the expected JSON".into()),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            AuthError::Malformed("not a JWT".into())
        }
        _ => AuthError::Malformed("unreadable token".into()),
    }
}

/// A JWT NumericDate (seconds, possibly fractional) in unix milliseconds.
fn numeric_date_ms(v: &Value) -> Option<i64> {
    let secs = v.as_f64()?;
    if !(0.0..=1e13).contains(&secs) {
        return None;
    }
    Some((secs * 1000.0) as i64)
}

fn string_list(v: Option<Value>, name: &'static str) -> Result<Vec<String>, AuthError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) if !s.is_empty() => Ok(s),
                _ => Err(AuthError::InvalidClaim(name)),
            })
            .collect(),
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

fn metadata(v: Option<Value>) -> Result<BTreeMap<String, String>, AuthError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => Ok(map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect()),
        Some(_) => Err(AuthError::InvalidClaim("meta")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn cfg() -> VerifierConfig {
        VerifierConfig {
            algorithm: Algorithm::HS256,
            key: KeyMaterial::Secret(b"secret".to_vec()),
            issuer: None,
            audience: None,
            require_exp: true,
            leeway_ms: 0,
        }
    }

    fn sign(alg: Algorithm, claims: Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap()
    }

    fn exp_in(ms: i64) -> i64 {
        (NOW + ms) / 1000
    }

    #[test]
    fn accepts_a_good_token_with_roles_and_meta() {
        let v = Verifier::new(&cfg()).unwrap();
        let t = sign(
            Algorithm::HS256,
            json!({"sub":"u1","exp":exp_in(60_000),"roles":["a","b"],"meta":{"plan":"pro","n":3,"o":{"x":1}}}),
        );
        let id = v.verify(&t, NOW).unwrap();
        assert_eq!(id.user_id, "u1");
        assert_eq!(id.roles, vec!["a", "b"]);
        assert_eq!(id.metadata.get("plan").unwrap(), "pro");
        assert_eq!(id.metadata.get("n").unwrap(), "3");
        assert_eq!(id.metadata.get("o").unwrap(), r#"{"x":1}"#);
        assert_eq!(id.expires_at_ms, Some(exp_in(60_000) * 1000));
    }

    #[test]
    fn refuses_each_fault() {
        let v = Verifier::new(&cfg()).unwrap();
        let check = |claims: Value, want: AuthError| {
            assert_eq!(
                v.verify(&sign(Algorithm::HS256, claims.clone()), NOW),
                Err(want),
                "{claims}"
            );
        };
        check(json!({"sub":"u","exp":exp_in(-1000)}), AuthError::Expired);
        check(
            json!({"exp":exp_in(60_000)}),
            AuthError::MissingClaim("sub"),
        );
        check(
            json!({"sub":"","exp":exp_in(60_000)}),
            AuthError::InvalidClaim("sub"),
        );
        check(json!({"sub":"u"}), AuthError::MissingClaim("exp"));
        check(
            json!({"sub":"u","exp":exp_in(60_000),"nbf":exp_in(10_000)}),
            AuthError::NotYetValid,
        );
        check(
            json!({"sub":"u","exp":exp_in(60_000),"roles":"admin"}),
            AuthError::InvalidClaim("roles"),
        );
        check(
            json!({"sub":"u","exp":exp_in(60_000),"meta":[1]}),
            AuthError::InvalidClaim("meta"),
        );
        assert_eq!(
            v.verify(
                &sign(Algorithm::HS384, json!({"sub":"u","exp":exp_in(60_000)})),
                NOW
            ),
            Err(AuthError::WrongAlgorithm)
        );
        assert_eq!(v.verify("", NOW), Err(AuthError::Missing));
        // `alg: none` (an unsigned token): the wrong algorithm, not a malformed token.
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(r#"{"alg":"none","typ":"JWT"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(json!({"sub":"u","exp":exp_in(60_000)}).to_string())
        );
        assert_eq!(v.verify(&none, NOW), Err(AuthError::WrongAlgorithm));
        assert!(matches!(v.verify("abc", NOW), Err(AuthError::Malformed(_))));
        let other = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub":"u","exp":exp_in(60_000)}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(v.verify(&other, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused() {
        let v = Verifier::new(&cfg()).unwrap();
        // header {"alg":"none","typ":"JWT"}, claims {"sub":"u","exp":9999999999}, no signature
        let t = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(v.verify(t, NOW).is_err());
    }

    #[test]
    fn leeway_applies_to_exp_and_nbf() {
        let v = Verifier::new(&VerifierConfig {
            leeway_ms: 5_000,
            ..cfg()
        })
        .unwrap();
        assert!(v
            .verify(
                &sign(Algorithm::HS256, json!({"sub":"u","exp":exp_in(-3000)})),
                NOW
            )
            .is_ok());
        assert!(v
            .verify(
                &sign(Algorithm::HS256, json!({"sub":"u","exp":exp_in(-6000)})),
                NOW
            )
            .is_err());
        assert!(v
            .verify(
                &sign(
                    Algorithm::HS256,
                    json!({"sub":"u","exp":exp_in(60_000),"nbf":exp_in(3000)})
                ),
                NOW
            )
            .is_ok());
    }

    #[test]
    fn exp_optional_when_configured_and_iss_aud_checked() {
        let v = Verifier::new(&VerifierConfig {
            require_exp: false,
            issuer: Some("me".into()),
            audience: Some("app".into()),
            ..cfg()
        })
        .unwrap();
        let ok = v.verify(
            &sign(Algorithm::HS256, json!({"sub":"u","iss":"me","aud":"app"})),
            NOW,
        );
        assert_eq!(ok.unwrap().expires_at_ms, None);
        assert_eq!(
            v.verify(
                &sign(Algorithm::HS256, json!({"sub":"u","iss":"you","aud":"app"})),
                NOW
            ),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            v.verify(
                &sign(Algorithm::HS256, json!({"sub":"u","iss":"me","aud":"web"})),
                NOW
            ),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, json!({"sub":"u","aud":"app"})), NOW),
            Err(AuthError::WrongIssuer)
        );
    }

    #[test]
    fn a_jwks_key_set_is_filtered_to_the_pinned_algorithm_and_found_by_kid() {
        let jwks = json!({"keys": [
            {"kty":"oct","kid":"sym","k":"c2VjcmV0"},
            {"kty":"EC","kid":"ec","crv":"P-256","alg":"ES256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","kid":"ec384-alg","crv":"P-256","alg":"ES384",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]});
        let set = KeySet::from_jwks(jwks.to_string().as_bytes(), Algorithm::ES256).unwrap();
        assert_eq!(set.len(), 1, "only the ES256 key survives");
        assert!(set.find(Some("ec")).is_some());
        assert!(
            set.find(Some("sym")).is_none(),
            "an oct key never becomes an HMAC secret"
        );
        assert!(set.find(Some("ec384-alg")).is_none());
        assert!(KeySet::from_jwks(jwks.to_string().as_bytes(), Algorithm::RS256).is_err());
        assert!(KeySet::from_jwks(b"{}", Algorithm::ES256).is_err());
        assert!(KeySet::from_jwks(b"nope", Algorithm::ES256).is_err());
        let v = Verifier::new(&VerifierConfig {
            algorithm: Algorithm::ES256,
            key: KeyMaterial::Jwks,
            ..cfg()
        })
        .unwrap();
        assert_eq!(v.verify("x.y.z", NOW), Err(AuthError::UnknownKey));
        let unknown = "eyJhbGciOiJFUzI1NiIsImtpZCI6Im5vIn0.e30.sig"; // {"alg":"ES256","kid":"no"}
        assert_eq!(
            v.verify_with(unknown, NOW, &set),
            Err(AuthError::UnknownKey)
        );
        assert!(
            Verifier::new(&VerifierConfig {
                key: KeyMaterial::Jwks,
                ..cfg()
            })
            .is_err(),
            "HS256 with JWKS"
        );
    }

    #[test]
    fn key_kinds_must_match_the_algorithm() {
        let mut c = cfg();
        c.algorithm = Algorithm::RS256;
        assert!(Verifier::new(&c).is_err(), "RS256 with a secret");
        c.key = KeyMaterial::PublicPem(b"not pem".to_vec());
        assert!(Verifier::new(&c).is_err(), "RS256 with garbage PEM");
        c.algorithm = Algorithm::HS256;
        assert!(Verifier::new(&c).is_err(), "HS256 with a public key");
        c.key = KeyMaterial::Secret(Vec::new());
        assert!(Verifier::new(&c).is_err(), "empty secret");
    }
}
