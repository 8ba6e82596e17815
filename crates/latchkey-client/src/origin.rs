//! Where the session's access token may go: the issuer's origin and the API origins the app
//! listed when it built the client (SPEC 5.7). This module owns parsing those origins once and
//! the check every token-bearing request passes before anything is sent; it does no I/O.
//!
//! An origin is compared as RFC 6454 defines it: scheme, host and port, exactly, with a
//! scheme's default port written or not (`http://a` and `http://a:80` are one origin). Hosts
//! are compared in the URL parser's normal form (lower case, IDNA), so spelling cannot smuggle
//! a token past the check. Only `http` and `https` URLs have an origin here: any other scheme
//! (`file:`, `data:`) is refused, because such URLs have opaque origins that equal nothing.

use reqwest::Url;

use crate::Error;

/// The origins, serialised as `scheme://host[:port]` (default port left out), that may
/// receive the access token. The first is the issuer's.
#[derive(Debug, Clone)]
pub(crate) struct AllowedOrigins(Vec<String>);

/// The origin of an `http` or `https` URL, in the form [`AllowedOrigins`] holds.
fn origin_of(url: &Url) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

impl AllowedOrigins {
    /// Parses the issuer URL (which may have a path: the server's endpoints hang below it) and
    /// the API origins. An API origin must be an origin and nothing more: a path would suggest
    /// the token is kept to that path, which it is not, so one is refused rather than ignored.
    pub(crate) fn parse(issuer: &str, api_origins: &[String]) -> Result<Self, Error> {
        let issuer_url =
            Url::parse(issuer).map_err(|e| Error::InvalidUrl(format!("the issuer {issuer:?}: {e}")))?;
        let issuer_origin = origin_of(&issuer_url)
            .ok_or_else(|| Error::InvalidUrl(format!("the issuer {issuer:?} is not an http(s) URL")))?;
        let mut origins = vec![issuer_origin];
        for api in api_origins {
            let url =
                Url::parse(api).map_err(|e| Error::InvalidUrl(format!("the API origin {api:?}: {e}")))?;
            let origin = origin_of(&url)
                .ok_or_else(|| Error::InvalidUrl(format!("the API origin {api:?} is not an http(s) URL")))?;
            let is_bare = url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none();
            if !is_bare {
                return Err(Error::InvalidUrl(format!(
                    "the API origin {api:?} has more than scheme://host[:port] (use {origin:?})"
                )));
            }
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(Self(origins))
    }

    /// Parses a request URL and admits it when its origin is one of these.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when it does not parse (the URL itself is left out of the error:
    /// it is the app's, and its query may hold something private), and
    /// [`Error::OriginNotAllowed`] when its origin is not allowed.
    pub(crate) fn admit(&self, url: &str) -> Result<Url, Error> {
        let url = Url::parse(url).map_err(|e| Error::InvalidUrl(format!("the request URL: {e}")))?;
        match origin_of(&url) {
            Some(origin) if self.0.contains(&origin) => Ok(url),
            Some(origin) => Err(Error::OriginNotAllowed { origin }),
            None => Err(Error::OriginNotAllowed { origin: format!("{}:", url.scheme()) }),
        }
    }

    /// The allowed origins, the issuer's first.
    pub(crate) fn as_slice(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(apis: &[&str]) -> AllowedOrigins {
        let apis: Vec<String> = apis.iter().map(|s| (*s).to_owned()).collect();
        AllowedOrigins::parse("https://auth.example.com/latchkey/", &apis).unwrap()
    }

    fn refused(a: &AllowedOrigins, url: &str) -> String {
        match a.admit(url) {
            Err(Error::OriginNotAllowed { origin }) => origin,
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_issuer_and_listed_api_origins_are_admitted() {
        let a = allowed(&["https://api.example.com", "http://127.0.0.1:8090/"]);
        assert_eq!(
            a.as_slice(),
            ["https://auth.example.com", "https://api.example.com", "http://127.0.0.1:8090"]
        );
        for url in [
            "https://auth.example.com/auth/me",
            "https://auth.example.com:443/anything?q=1",
            "https://api.example.com/notes",
            "https://API.Example.COM/notes",
            "http://127.0.0.1:8090/whoami",
        ] {
            assert!(a.admit(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn scheme_host_and_port_must_each_match() {
        let a = allowed(&["https://api.example.com", "http://127.0.0.1:8090"]);
        assert_eq!(refused(&a, "http://api.example.com/notes"), "http://api.example.com");
        assert_eq!(refused(&a, "https://api.example.com:8443/notes"), "https://api.example.com:8443");
        assert_eq!(refused(&a, "https://evil.example.com/notes"), "https://evil.example.com");
        assert_eq!(
            refused(&a, "https://api.example.com.evil.example/"),
            "https://api.example.com.evil.example"
        );
        assert_eq!(refused(&a, "https://example.com/"), "https://example.com");
        assert_eq!(refused(&a, "http://127.0.0.1:8091/whoami"), "http://127.0.0.1:8091");
        assert_eq!(refused(&a, "http://localhost:8090/whoami"), "http://localhost:8090");
        // Credentials in the URL do not change its origin, and are not echoed.
        assert_eq!(refused(&a, "https://api.example.com@evil.example/"), "https://evil.example");
        assert_eq!(refused(&a, "file:///etc/passwd"), "file:");
        assert_eq!(refused(&a, "data:text/plain,hi"), "data:");
    }

    #[test]
    fn unparsable_request_urls_are_refused_without_echoing_them() {
        let a = allowed(&[]);
        match a.admit("/relative/secret-path") {
            Err(Error::InvalidUrl(why)) => assert!(!why.contains("secret-path"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn api_origins_are_bare_origins() {
        let parse = |api: &str| AllowedOrigins::parse("http://127.0.0.1:8080", &[api.to_owned()]);
        for api in [
            "https://api.example.com/v1",
            "https://api.example.com/?x=1",
            "https://user@api.example.com",
            "ftp://api.example.com",
            "api.example.com",
        ] {
            assert!(matches!(parse(api), Err(Error::InvalidUrl(_))), "{api}");
        }
        assert!(parse("https://api.example.com/").is_ok());
        assert!(parse("http://[::1]:8090").is_ok());
    }

    #[test]
    fn the_issuer_must_be_an_http_url() {
        for issuer in ["", "auth.example.com", "file:///tmp/x", "mailto:a@example.com"] {
            assert!(matches!(AllowedOrigins::parse(issuer, &[]), Err(Error::InvalidUrl(_))), "{issuer:?}");
        }
    }
}
