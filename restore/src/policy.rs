//! Which addresses a source URL may be fetched from.
//!
//! A source URL comes from a token holder, and the fetch runs inside the platform: without a
//! rule, `http://169.254.169.254/…` reads the cloud's instance credentials and
//! `http://127.0.0.1:<port>/` probes the controller's own neighbours. By default only public
//! addresses are fetched from ([`SourcePolicy::PublicOnly`]); admins and controllers started
//! with `--allow-private-sources` may use any ([`SourcePolicy::Any`]).
//!
//! The rule is applied where it cannot be dodged: to the addresses a host name resolves to, at
//! connect time, for the first request and after every redirect (the HTTP client connects only
//! to addresses [`PolicyResolver`] let through, so a name that resolves differently the second
//! time, DNS rebinding, gains nothing), and to address literals in every URL followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use futures_util::future::BoxFuture;

/// Where sources may be fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePolicy {
    /// Public addresses only.
    #[default]
    PublicOnly,
    /// Any address, private ones included.
    Any,
}

/// A fetch the policy refused; its message names the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host} is {address}, {kind}; sources must be on public addresses (admins, or a controller started with --allow-private-sources, may use private ones)"
)]
pub struct Refused {
    pub host: String,
    pub address: IpAddr,
    pub kind: &'static str,
}

/// Which addresses are refused: `Some(kind of address)` for a refused one.
pub type Rule = fn(IpAddr) -> Option<&'static str>;

/// How host names are resolved (the system's resolver; tests give their own answers).
pub type Lookup = Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

impl SourcePolicy {
    /// The policy as a rule.
    pub fn rule(self) -> Rule {
        match self {
            Self::PublicOnly => classify,
            Self::Any => |_| None,
        }
    }
}

/// The addresses of `host` the rule lets through.
///
/// # Errors
/// [`Refused`] naming the first refused address, when none passes.
pub fn check_addresses(rule: Rule, host: &str, addresses: &[IpAddr]) -> Result<Vec<IpAddr>, Refused> {
    let allowed: Vec<IpAddr> = addresses.iter().copied().filter(|ip| rule(*ip).is_none()).collect();
    match addresses.iter().find_map(|ip| rule(*ip).map(|kind| (*ip, kind))) {
        Some((address, kind)) if allowed.is_empty() => Err(Refused { host: host.to_string(), address, kind }),
        _ => Ok(allowed),
    }
}

/// Checks a URL host given as an address literal (`[::1]`, `127.0.0.1`); names pass (they are
/// checked when resolved).
///
/// # Errors
/// [`Refused`] for a literal address the rule refuses.
pub fn check_literal(rule: Rule, host: &str) -> Result<(), Refused> {
    match literal(host) {
        Some(ip) => check_addresses(rule, host, &[ip]).map(drop),
        None => Ok(()),
    }
}

fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// What kind of non-public address `ip` is, or `None` for a public one: the rule of
/// [`SourcePolicy::PublicOnly`].
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "an unspecified address",
        (127, ..) => "a loopback address",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address (where cloud metadata services live)",
        (100, 64..=127, _) => "a shared (carrier-grade NAT) address",
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => {
            "a reserved or documentation address"
        }
        (224..=239, ..) => "a multicast address",
        (240..=255, ..) => "a reserved address",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    // Addresses that carry an IPv4 address are judged by it (NAT64 64:ff9b::/96, 6to4 2002::/16).
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(Ipv4Addr::from(ip.to_bits() as u32));
    }
    if segments[0] == 0x2002 {
        return classify_v4(Ipv4Addr::from((u32::from(segments[1]) << 16) | u32::from(segments[2])));
    }
    // The NAT64 local-use prefix 64:ff9b:1::/48 (RFC 8215) is translated by the site's own NAT64,
    // which may embed the IPv4 address anywhere and reaches the site's inside: never public.
    if segments[..3] == [0x64, 0xff9b, 1] {
        return Some("a private address (NAT64 local-use, translated by the site's own NAT64)");
    }
    Some(match segments[0] {
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        // IPv4-compatible (deprecated) addresses.
        0 => "a reserved address",
        0xfc00..=0xfdff => "a unique-local address (where cloud metadata services live)",
        0xfe80..=0xfebf => "a link-local address",
        0xfec0..=0xfeff => "a site-local address",
        0xff00..=0xffff => "a multicast address",
        0x2001 if segments[1] == 0xdb8 => "a documentation address",
        // Teredo tunnels reach anything.
        0x2001 if segments[1] == 0 => "a Teredo address",
        _ => return None,
    })
}

/// The system's resolver.
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    })
}

/// A DNS resolver for the HTTP client that returns only the addresses the rule lets through,
/// and fails with [`Refused`] when it lets none.
#[derive(Clone)]
pub struct PolicyResolver {
    pub rule: Rule,
    pub lookup: Lookup,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (rule, lookup) = (self.rule, self.lookup.clone());
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved = lookup(host.clone()).await?;
            let allowed = check_addresses(rule, &host, &resolved)?;
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Checks a source URL the moment it is given, for a runtime that reads `schemes` (`what` says
/// which, for the refusal), then as [`check_location`].
///
/// # Errors
/// The reason, for the caller.
pub async fn check_source(location: &str, schemes: &[&str], what: &str, policy: SourcePolicy) -> Result<(), String> {
    if !schemes.iter().any(|s| location.starts_with(s)) {
        return Err(format!("{what}; got {}", devdb_shared::source::display(location)));
    }
    check_location(location, policy).await
}

/// Checks a source URL the moment it is given: it must be a well-formed URL (only then does
/// its display form surely hide its secrets; a malformed one is not echoed), and an http(s)
/// host must pass `policy` (every fetch checks again, at connect time). `Err` is the reason.
pub async fn check_location(location: &str, policy: SourcePolicy) -> Result<(), String> {
    let url = reqwest::Url::parse(location).map_err(|e| format!("backupLocation is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Ok(());
    }
    let Some(host) = url.host_str() else { return Ok(()) };
    check_host(policy.rule(), host, &system_lookup())
        .await
        .map_err(|refused| format!("refused source {}: {refused}", devdb_shared::source::display(location)))
}

/// Checks `host` (a name or an address literal) the moment a source is given, so a bad one is
/// refused at once (every fetch checks again, at connect time).
///
/// # Errors
/// [`Refused`] when no address of `host` passes. A name that does not resolve passes: the fetch
/// reports it.
pub async fn check_host(rule: Rule, host: &str, lookup: &Lookup) -> Result<(), Refused> {
    check_literal(rule, host)?;
    if literal(host).is_some() {
        return Ok(());
    }
    match lookup(host.to_string()).await {
        Ok(addresses) => check_addresses(rule, host, &addresses).map(drop),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_public_addresses_pass_by_default() {
        let public_only = SourcePolicy::PublicOnly.rule();
        for public in ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "100.128.0.1", "::ffff:1.1.1.1"] {
            assert_eq!(public_only(ip(public)), None, "{public}");
        }
        for (private, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.0.0.5", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.100.100.200", "carrier-grade"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            // NAT64 local-use (RFC 8215): translated by the site's own NAT64, to its inside.
            ("64:ff9b:1::a00:5", "private"),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "private"),
            ("64:ff9b:1::808:808", "private"),
            ("2002:7f00:1::", "loopback"),
            ("fd00:ec2::254", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("224.0.0.1", "multicast"),
            ("2001:db8::1", "documentation"),
        ] {
            let refused = public_only(ip(private)).expect(private);
            assert!(refused.contains(kind), "{private}: {refused}");
            assert_eq!(SourcePolicy::Any.rule()(ip(private)), None, "admins may use {private}");
        }
    }

    #[test]
    fn a_host_passes_if_any_of_its_addresses_does_and_the_refusal_names_the_policy() {
        let rule = SourcePolicy::PublicOnly.rule();
        assert_eq!(check_addresses(rule, "mixed", &[ip("10.0.0.1"), ip("8.8.8.8")]), Ok(vec![ip("8.8.8.8")]));
        let refused = check_addresses(rule, "internal.example", &[ip("10.0.0.1")]).expect_err("refused");
        let message = refused.to_string();
        assert!(message.contains("internal.example is 10.0.0.1, a private address"), "{message}");
        assert!(message.contains("--allow-private-sources"), "{message}");
        assert!(check_literal(rule, "[::1]").is_err());
        assert!(check_literal(rule, "127.0.0.1").is_err());
        assert!(check_literal(rule, "dumps.example.com").is_ok(), "names are checked when resolved");
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let lookup = system_lookup();
        let refused = check_host(classify, "localhost", &lookup).await.expect_err("loopback");
        assert_eq!(refused.kind, "a loopback address");
        assert!(check_host(SourcePolicy::Any.rule(), "localhost", &lookup).await.is_ok());
        assert!(check_host(classify, "no-such-host.invalid", &lookup).await.is_ok(), "the fetch reports it");
    }
}
