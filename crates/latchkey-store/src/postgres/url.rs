//! Keeps a PostgreSQL URL's password out of errors and logs: a redacted form of the URL,
//! and a scrubber for messages that might quote it. It parses only as much of the URL as
//! it needs to find the password; connecting is sqlx's business, not this file's.

/// What a password is replaced with.
const MASK: &str = "***";

/// The URL with its password, in the user-info part (`postgres://user:PASSWORD@host/db`) or
/// a `password=` parameter, replaced by `***`. Everything else is kept, so the message still
/// says which server and database it was about.
pub(super) fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={MASK}"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// `scheme://user:PASSWORD@host/path` with the password masked; other forms unchanged.
fn redact_userinfo(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else { return base.to_owned() };
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{path}")),
        None => (rest, String::new()),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return base.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{MASK}@{host}{path}"),
        None => base.to_owned(),
    }
}

/// The passwords a URL carries, as written and percent-decoded (a driver's message may
/// quote either).
fn passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.split_once("://").map_or(base, |(_, rest)| rest.split('/').next().unwrap_or(rest));
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        found.push(password.to_owned());
    }
    for pair in query.unwrap_or_default().split('&') {
        if let Some((key, value)) = pair.split_once('=')
            && key.eq_ignore_ascii_case("password")
        {
            found.push(value.to_owned());
        }
    }
    let decoded: Vec<String> = found.iter().map(|p| percent_decode(p)).collect();
    found.extend(decoded);
    found.retain(|p| !p.is_empty());
    found
}

/// A message with the URL replaced by its redacted form and any password in it masked.
pub(super) fn scrub(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact(url));
    for password in passwords(url) {
        out = out.replace(&password, MASK);
    }
    out
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_wherever_the_url_carries_it() {
        assert_eq!(redact("postgres://lk:s3cret@db:5432/lk"), "postgres://lk:***@db:5432/lk");
        assert_eq!(redact("postgres://lk:s3cret@db"), "postgres://lk:***@db");
        assert_eq!(redact("postgres://lk@db/lk?sslmode=require"), "postgres://lk@db/lk?sslmode=require");
        assert_eq!(
            redact("postgresql://db/lk?user=lk&password=s3cret&sslmode=require"),
            "postgresql://db/lk?user=lk&password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://lk:p%40ss@db/lk"), "postgres://lk:***@db/lk");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn scrubs_raw_and_decoded_passwords_from_messages() {
        let url = "postgres://lk:p%40ss@db/lk";
        let message = format!("cannot reach {url}: password p@ss rejected, p%40ss too");
        let scrubbed = scrub(&message, url);
        assert!(!scrubbed.contains("p@ss") && !scrubbed.contains("p%40ss"), "{scrubbed}");
        assert!(scrubbed.contains("postgres://lk:***@db/lk"), "{scrubbed}");
        assert_eq!(scrub("nothing here", "postgres://db/lk"), "nothing here");
    }

    #[test]
    fn percent_decoding_keeps_what_it_cannot_decode() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%+5"), "%+5");
    }
}
