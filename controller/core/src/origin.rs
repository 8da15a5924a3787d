//! Where a request comes from, as far as the controller can tell: a browser's page on another
//! site ([`cross_site`]), and host names that are this machine's own ([`loopback_host`]). The
//! API's guard and the dashboard's session both ask.

use axum::http::{HeaderMap, header};

/// Whether the browser says the request comes from another site: by `Sec-Fetch-Site` where
/// the browser sends it (every current one does), else by an `Origin` other than this host.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin_host.as_bytes() != host.as_bytes()
}

/// `localhost`, `127.0.0.1`, `[::1]`, with or without a port, and nothing else.
pub fn loopback_host(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, after)) => (name, after.strip_prefix(':').or_else(|| after.is_empty().then_some(""))),
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, Some("")),
        },
    };
    let port_ok = port.is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && (name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::headers;

    #[test]
    fn cross_site_requests_are_recognised() {
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])), "curl and the CLI send neither header");
        assert!(!cross_site(&headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])), "a sibling host name is another tenant");
        assert!(cross_site(&headers(&[("origin", "http://evil.example"), ("host", "127.0.0.1:8080")])));
    }

    #[test]
    fn only_loopback_names_with_an_optional_port_pass() {
        for ok in ["localhost", "LOCALHOST:8080", "127.0.0.1", "127.0.0.1:8080", "127.1.2.3:1", "[::1]", "[::1]:8080"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for refused in [
            "",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example:80",
            "[::1].evil.example",
            "[::1]evil",
            "[::1]:80x",
            "127.0.0.1:8080:1",
            "::1",
            "10.0.0.1:8080",
        ] {
            assert!(!loopback_host(refused), "{refused}");
        }
    }
}
