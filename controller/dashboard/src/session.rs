//! Who is signed in to the dashboard, and the guards on its forms.
//!
//! - The session is the API token itself, in an `HttpOnly`, `SameSite=Strict` cookie, checked on
//!   every request exactly as the API checks a bearer token. Reached by any name but a loopback
//!   one over plain HTTP, the cookies are `Secure` and `__Host-` prefixed, so no other host of
//!   the domain can plant one; a request carrying two session cookies (one planted with a
//!   narrower path) is treated as signed out. Without configured tokens (a loopback controller)
//!   there is no sign-in.
//! - Every form carries a CSRF token equal to a random cookie of its own (double submit: a
//!   page of another site can neither read nor set it), compared in constant time; and a
//!   change is refused when the browser says it comes from another site (`Sec-Fetch-Site`,
//!   `Origin`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use crate::Dashboard;
use devdb_core::auth::Caller;

const SESSION_COOKIE: &str = "devdb_session";
const CSRF_COOKIE: &str = "devdb_csrf";
/// How long a sign-in lasts.
const SESSION_SECONDS: u32 = 12 * 3600;

/// The signed-in caller of a dashboard request.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token to call the API with (`None`: no tokens configured).
    pub token: Option<String>,
    pub caller: Caller,
    /// The CSRF token forms must carry.
    pub csrf: String,
    /// Whether sign-in exists (tokens are configured).
    pub signed_in: bool,
}

impl Session {
    /// Whether a form's CSRF field is this session's.
    pub fn verify(&self, submitted: &str) -> bool {
        !submitted.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(submitted.as_bytes()))
    }

    /// The owner signed in, if an owner.
    pub fn owner(&self) -> Option<&str> {
        match &self.caller {
            Caller::Admin => None,
            Caller::Owner(owner) => Some(owner),
        }
    }
}

/// Whether cookies are `Secure` and `__Host-` prefixed: behind TLS (`X-Forwarded-Proto: https`),
/// or reached by a name that is not loopback (then only over HTTPS can a browser keep them). A
/// loopback name over plain HTTP (`devdb up`, a port-forward) keeps plain cookies.
fn secure(headers: &HeaderMap) -> bool {
    let tls = headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes() == b"https");
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    tls || !devdb_core::origin::loopback_host(host)
}

/// A cookie's name for this request: `__Host-name` when [`secure`].
fn name(headers: &HeaderMap, base: &str) -> String {
    if secure(headers) { format!("__Host-{base}") } else { base.to_string() }
}

/// Every value of cookie `name` in the request.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
        .collect()
}

/// The one value of cookie `name`; none when absent or when there are several (one planted).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    match cookies(headers, name).as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// `Set-Cookie` for `base=value` (`__Host-` and `Secure` when [`secure`]); `max_age` 0 clears.
fn set_cookie(headers: &HeaderMap, base: &str, value: &str, max_age: u32) -> HeaderValue {
    let flag = if secure(headers) { "; Secure" } else { "" };
    let text = format!("{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{flag}", name(headers, base));
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("devdb_invalid=1"))
}

/// The session cookie of a new sign-in.
pub fn sign_in_cookie(headers: &HeaderMap, token: &str) -> HeaderValue {
    set_cookie(headers, SESSION_COOKIE, token, SESSION_SECONDS)
}

/// Clears the session cookie.
pub fn sign_out_cookie(headers: &HeaderMap) -> HeaderValue {
    set_cookie(headers, SESSION_COOKIE, "", 0)
}

/// A fresh CSRF cookie (at sign-in).
pub fn new_csrf_cookie(headers: &HeaderMap) -> HeaderValue {
    set_cookie(headers, CSRF_COOKIE, &devdb_core::auth::generate_password(), SESSION_SECONDS)
}

/// Resolves the session of every dashboard page (or sends the browser to sign in), refuses
/// cross-site changes, and gives a browser without one its CSRF cookie.
pub async fn require(State(dashboard): State<std::sync::Arc<Dashboard>>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    if request.method() != Method::GET && request.method() != Method::HEAD && devdb_core::origin::cross_site(headers) {
        return (StatusCode::FORBIDDEN, "cross-site requests cannot change anything here").into_response();
    }
    let token = cookie(headers, &name(headers, SESSION_COOKIE)).map(str::to_owned);
    let caller = dashboard.tokens.caller(token.as_ref().map(|t| format!("Bearer {t}")).as_deref());
    let existing_csrf = cookie(headers, &name(headers, CSRF_COOKIE)).map(str::to_owned);
    let csrf = existing_csrf.clone().unwrap_or_else(devdb_core::auth::generate_password);
    let new_csrf_cookie = existing_csrf.is_none().then(|| set_cookie(headers, CSRF_COOKIE, &csrf, SESSION_SECONDS));
    let path = request.uri().path().to_string();
    let public = path == "/ui/sign-in" || path.starts_with("/ui/assets/");
    let signed_in = !dashboard.tokens.is_empty();
    let response = match caller {
        Some(caller) => {
            let token = token.filter(|_| signed_in);
            request.extensions_mut().insert(Session { token, caller, csrf: csrf.clone(), signed_in });
            next.run(request).await
        }
        None if public => {
            request.extensions_mut().insert(Session {
                token: None,
                caller: Caller::Owner(String::new()),
                csrf: csrf.clone(),
                signed_in,
            });
            next.run(request).await
        }
        None => {
            let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
            Redirect::to(&crate::client::with_query("/ui/sign-in", &[("next", Some(target))])).into_response()
        }
    };
    let mut response = response;
    if let Some(value) = new_csrf_cookie {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Where to go after signing in: a path of this site only (never `//elsewhere`).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.starts_with("/\\")
                && next.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            next
        }
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devdb_core::harness::headers;

    #[test]
    fn cookies_are_found_by_exact_name_and_a_planted_second_one_voids_both() {
        let h = headers(&[("cookie", "a=1; devdb_session=tok; devdb_csrf=c"), ("cookie", "x=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "x"), Some("2"));
        assert_eq!(cookie(&h, "devdb"), None);
        let planted = headers(&[("cookie", "devdb_session=attacker; devdb_session=tok")]);
        assert_eq!(cookie(&planted, SESSION_COOKIE), None);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_host_prefixed_and_secure_unless_loopback_http() {
        let local = headers(&[("host", "127.0.0.1:8080")]);
        let plain = sign_in_cookie(&local, "tok");
        assert_eq!(plain.to_str().ok(), Some("devdb_session=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"));
        for h in [
            headers(&[("host", "127.0.0.1:8080"), ("x-forwarded-proto", "https")]),
            headers(&[("host", "devdb.example.com")]),
            headers(&[("host", "[::1]:8080"), ("x-forwarded-proto", "https")]),
        ] {
            let cookie = sign_in_cookie(&h, "tok");
            let text = cookie.to_str().expect("text");
            assert!(text.starts_with("__Host-devdb_session=tok; Path=/;") && text.ends_with("; Secure"), "{text}");
        }
        assert!(!secure(&headers(&[("host", "localhost:8080")])));
        assert!(!secure(&headers(&[("host", "[::1]:8080")])));
        let over_tls = headers(&[("host", "devdb.example.com"), ("cookie", "devdb_session=planted")]);
        assert_eq!(cookie(&over_tls, &name(&over_tls, SESSION_COOKIE)), None, "only the __Host- cookie counts");
    }

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/databases/kate-pg")), "/databases/kate-pg");
        for hostile in [
            "//evil.example/",
            "https://evil.example",
            "/\\evil.example",
            "javascript:alert(1)",
            "/a\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let session = Session { token: None, caller: Caller::Admin, csrf: "abc".into(), signed_in: false };
        assert!(session.verify("abc"));
        assert!(!session.verify("abd"));
        assert!(!session.verify(""));
    }
}
