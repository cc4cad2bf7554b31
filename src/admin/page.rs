//! The console's files: two HTML pages (the console, the sign-in) and their script, style
//! and icon, embedded from `clients/admin/` at build time and served with a policy that lets
//! them load only themselves and talk only to this host. The pages carry the console's path
//! (validated to plain path characters) and nothing else of the server: no key, no token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::Admin;

const CONSOLE_HTML: &str = include_str!("../../clients/admin/index.html");
const SIGN_IN_HTML: &str = include_str!("../../clients/admin/sign-in.html");
const CONSOLE_JS: &str = include_str!("../../clients/admin/console.js");
const SIGN_IN_JS: &str = include_str!("../../clients/admin/sign-in.js");
const CSS: &str = include_str!("../../clients/admin/admin.css");
const ICON: &str = include_str!("../../clients/admin/icon.svg");

/// Only this host's own files and requests; no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The pages with the console's path written in.
pub struct Pages {
    base: String,
    console: String,
    sign_in: String,
}

impl Pages {
    pub fn new(base: &str) -> Pages {
        Pages {
            base: base.to_owned(),
            console: CONSOLE_HTML.replace("{{BASE}}", base),
            sign_in: SIGN_IN_HTML.replace("{{BASE}}", base),
        }
    }
}

fn respond(content_type: &'static str, cache: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// `GET <path>`: the console with a session, else the sign-in page (303).
pub async fn console(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    match admin.session(&headers).await {
        Ok(_) => respond(
            "text/html; charset=utf-8",
            "no-store",
            admin.pages.console.clone(),
        ),
        Err(_) => Redirect::to(&format!("{}/sign-in", admin.pages.base)).into_response(),
    }
}

/// `GET <path>/`: the console's one address.
pub async fn to_console(State(admin): State<Arc<Admin>>) -> Response {
    Redirect::permanent(&admin.pages.base).into_response()
}

/// `GET <path>/sign-in`.
pub async fn sign_in(State(admin): State<Arc<Admin>>) -> Response {
    respond(
        "text/html; charset=utf-8",
        "no-store",
        admin.pages.sign_in.clone(),
    )
}

/// `GET <path>/assets/<file>`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS),
        "sign-in.js" => ("text/javascript; charset=utf-8", SIGN_IN_JS),
        "admin.css" => ("text/css; charset=utf-8", CSS),
        "icon.svg" => ("image/svg+xml", ICON),
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    respond(content_type, "no-cache", body.to_owned())
}

#[cfg(test)]
mod tests {
    /// Every script and style of the console (together under 100 KB).
    const SCRIPTS_AND_STYLES: [&str; 3] = [super::CONSOLE_JS, super::SIGN_IN_JS, super::CSS];

    #[test]
    fn scripts_and_styles_stay_under_100_kb_and_pages_name_their_base_only() {
        let total: usize = SCRIPTS_AND_STYLES.iter().map(|s| s.len()).sum();
        assert!(total < 100 * 1024, "{total} bytes of script and style");
        let p = super::Pages::new("/ops/console");
        assert!(p.console.contains("data-base=\"/ops/console\""));
        assert!(p.sign_in.contains("/ops/console/assets/sign-in.js"));
        assert!(!p.console.contains("{{BASE}}") && !p.sign_in.contains("{{BASE}}"));
    }
}
