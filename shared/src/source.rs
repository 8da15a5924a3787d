//! How a project's source URL (`backupLocation`) is shown: the one place that decides it.
//!
//! Source URLs carry secrets: `https://user:password@host/…`, presigned query strings
//! (`X-Amz-Signature=…`, `sig=…`, `token=…`). Every API field, error message, event and log line
//! that names a source goes through [`display`], which keeps what tells a person *which* source
//! (scheme, host, port, path) and drops what could let them fetch it (user information, every
//! query value, the fragment). Query keys stay, so a presigned URL still reads as one.

/// What replaces a query value.
pub const HIDDEN: &str = "…";

/// The display form of a source URL: no user information, no query values, no fragment:
/// `https://kate:hunter2@dumps.example.com/shop.dump?X-Amz-Signature=abc&v=2#x` is shown as
/// `https://dumps.example.com/shop.dump?X-Amz-Signature=…&v=…`.
pub fn display(location: &str) -> String {
    let location = location.split('#').next().unwrap_or_default();
    let (before_query, query) = match location.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (location, None),
    };
    let mut shown = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            // User information ends at the authority's last '@' (a password may hold another).
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        // Not a URL: nothing to strip but the query.
        None => before_query.to_string(),
    };
    if let Some(query) = query {
        let keys: Vec<String> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}={HIDDEN}"),
                None => pair.to_string(),
            })
            .collect();
        if !keys.is_empty() {
            shown.push('?');
            shown.push_str(&keys.join("&"));
        }
    }
    shown
}

/// Replaces the secret-bearing forms of `location` quoted in `text` (whole, without its
/// fragment, without its query) by their display forms: for messages of tools and libraries that
/// quote the URL they fetched.
pub fn scrub(text: &str, location: &str) -> String {
    let whole = location.split('#').next().unwrap_or_default();
    let without_query = whole.split('?').next().unwrap_or_default();
    let mut out = text.to_string();
    for form in [location, whole, without_query] {
        let shown = display(form);
        if !form.is_empty() && shown != form {
            out = out.replace(form, &shown);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_query_values_and_fragments_are_hidden() {
        for (given, shown) in [
            ("https://dumps.example.com/shop.dump", "https://dumps.example.com/shop.dump"),
            ("https://kate:s3cret@dumps.example.com/a", "https://dumps.example.com/a"),
            ("https://kate:p@ss@word@dumps.example.com:8443/a", "https://dumps.example.com:8443/a"),
            ("http://token@host", "http://host"),
            (
                "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F&X-Amz-Signature=f00d&X-Amz-Expires=60",
                "https://b.s3.amazonaws.com/k?X-Amz-Credential=…&X-Amz-Signature=…&X-Amz-Expires=…",
            ),
            (
                "https://acct.blob.core.windows.net/c/d?sv=1&sig=abc%3D",
                "https://acct.blob.core.windows.net/c/d?sv=…&sig=…",
            ),
            ("https://h/d?token=abc#access_token=xyz", "https://h/d?token=…"),
            ("https://h/d?download", "https://h/d?download"),
            ("s3://bucket/path/shop.dump", "s3://bucket/path/shop.dump"),
            ("file:///srv/dumps/a@b.sql", "file:///srv/dumps/a@b.sql"),
            ("not a url?secret=1", "not a url?secret=…"),
        ] {
            assert_eq!(display(given), shown, "{given}");
        }
    }

    #[test]
    fn secrets_quoted_inside_a_message_are_replaced() {
        let url = "https://kate:s3cret@h.example/d.sql?sig=abc";
        let message = format!("error sending request for url ({url}): connection refused");
        let scrubbed = scrub(&message, url);
        assert!(!scrubbed.contains("s3cret") && !scrubbed.contains("abc"), "{scrubbed}");
        assert!(scrubbed.contains("https://h.example/d.sql?sig=…"), "{scrubbed}");
        let cut = "https://kate:s3cret@h.example/d.sql";
        assert!(!scrub(&format!("at {cut}"), url).contains("s3cret"));
    }
}
