//! Readable device names for the account page ("Chrome 156 on Linux"), from a session's
//! `User-Agent`. Display only: it decides nothing, and the raw string stays what the store
//! keeps and what the API (`GET /auth/sessions`) returns.
//!
//! The parsing is the ua-parser project's: its `ua-parser` crate (the official Rust
//! implementation of uap-core, released 2026-03 as 0.2.2; two new crates in the lock
//! file, `ua-parser` and `regex-filtered`, the rest, `regex` and `serde`, we already
//! build) applied to uap-core's `regexes.yaml`. We chose it over `woothee` (self-contained
//! but last released in 2021), `uaparser` and `user-agent-parser` (also need the data, and
//! pull in a YAML parser) and `fast_uaparser` (downloads the data at build time). The
//! crate ships no data, so `data/uap-core-regexes.json` holds uap-core's browser and OS
//! sections (Apache-2.0; uap-core 0.18.0 at ae4c16d, the copy `ua-parser` 0.2.2 is tested
//! against), converted once to JSON so that `serde_json`, which we already
//! use, reads it; nothing is fetched at build or run time. To update it, take
//! `regexes.yaml` from a newer uap-core and run
//! `python3 -c 'import json,sys,yaml; d=yaml.safe_load(sys.stdin); json.dump({k: d[k] for k in ("user_agent_parsers","os_parsers")}, sys.stdout, indent=0)' < regexes.yaml`.
//!
//! The compiled parsers are a process-wide, read-only table built on first use (about
//! 560 regexes, compiled once rather than per page view). That is the one exception to
//! "no globals" here: it holds no state and nothing would be gained by injecting it.

use std::sync::LazyLock;

use ua_parser::{os, user_agent};

/// uap-core's browser and OS patterns (see the module comment).
const REGEXES: &str = include_str!("../data/uap-core-regexes.json");

/// Longest raw user agent shown when it is not recognised, in characters.
const MAX_RAW: usize = 40;

/// What this module reads from [`REGEXES`]; other keys are ignored.
#[derive(serde::Deserialize)]
struct Regexes {
    user_agent_parsers: Vec<user_agent::Parser<'static>>,
    os_parsers: Vec<os::Parser<'static>>,
}

struct Extractors {
    browser: user_agent::Extractor<'static>,
    os: os::Extractor<'static>,
}

static EXTRACTORS: LazyLock<Option<Extractors>> = LazyLock::new(|| match build() {
    Ok(e) => Some(e),
    Err(e) => {
        // The data is compiled in and a unit test builds it, so this is a broken build;
        // the pages then show the raw user agent, shortened.
        tracing::error!(error = %e, "the user-agent patterns do not load");
        None
    }
});

fn build() -> Result<Extractors, String> {
    let regexes: Regexes = serde_json::from_str(REGEXES).map_err(|e| e.to_string())?;
    let browser = user_agent::Builder::new()
        .push_all(regexes.user_agent_parsers)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let os = os::Builder::new()
        .push_all(regexes.os_parsers)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Extractors { browser, os })
}

/// A device's name for people, from its `User-Agent`: "Chrome 156 on Linux",
/// "Mobile Safari 17 on iOS", "curl 8". An agent uap-core does not know is shown as itself, cut
/// to 40 characters; an empty one is "Unknown device".
pub fn display_name(user_agent: &str) -> String {
    let user_agent = user_agent.trim();
    if user_agent.is_empty() {
        return "Unknown device".to_owned();
    }
    let known = EXTRACTORS.as_ref().and_then(|e| {
        let browser = e.browser.extract(user_agent).filter(|b| b.family != "Other").map(|b| match b.major {
            Some(major) => format!("{} {major}", b.family),
            None => b.family.into_owned(),
        });
        let os = e.os.extract(user_agent).filter(|o| o.os != "Other").map(|o| os_name(&o.os).to_owned());
        match (browser, os) {
            (Some(b), Some(o)) => Some(format!("{b} on {o}")),
            (Some(b), None) => Some(b),
            (None, Some(o)) => Some(format!("{o} device")),
            (None, None) => None,
        }
    });
    known.unwrap_or_else(|| shortened(user_agent))
}

/// A user agent's family, without versions: "Chrome on Linux", "curl"; for an agent uap-core
/// does not know, its first product token ("MyApp" of `MyApp/2.1 (build 7)`). Two agents of
/// one family are one client updated, not two clients (see `risk.rs`).
pub fn family(user_agent: &str) -> String {
    let user_agent = user_agent.trim();
    let known = EXTRACTORS.as_ref().and_then(|e| {
        let browser =
            e.browser.extract(user_agent).filter(|b| b.family != "Other").map(|b| b.family.into_owned());
        let os = e.os.extract(user_agent).filter(|o| o.os != "Other").map(|o| os_name(&o.os).to_owned());
        match (browser, os) {
            (Some(b), Some(o)) => Some(format!("{b} on {o}")),
            (Some(b), None) => Some(b),
            (None, Some(o)) => Some(o),
            (None, None) => None,
        }
    });
    known.unwrap_or_else(|| user_agent.split(['/', ' ']).next().unwrap_or_default().to_owned())
}

/// uap-core's OS family, as the OS calls itself today.
fn os_name(family: &str) -> &str {
    match family {
        "Mac OS X" => "macOS",
        other => other,
    }
}

fn shortened(raw: &str) -> String {
    match raw.char_indices().nth(MAX_RAW) {
        Some((end, _)) => format!("{}…", raw.get(..end).unwrap_or(raw)),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patterns_load() {
        assert!(build().is_ok(), "{:?}", build().err());
    }

    #[test]
    fn names_common_browsers_and_systems() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
                "Chrome 156 on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
                "Chrome 124 on Windows",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
                "Firefox 125 on Windows",
            ),
            (
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
                "Firefox 126 on Ubuntu",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
                "Safari 17 on macOS",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
                "Firefox 125 on macOS",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
                "Mobile Safari 17 on iOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
                "Chrome Mobile 124 on Android",
            ),
            (
                "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
                "Firefox Mobile 125 on Android",
            ),
            ("curl/8.5.0", "curl 8"),
        ];
        for (ua, want) in cases {
            assert_eq!(display_name(ua), want, "{ua}");
        }
    }

    #[test]
    fn families_ignore_versions() {
        let chrome = |v: &str| {
            format!(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v} Safari/537.36"
            )
        };
        assert_eq!(family(&chrome("155.0.0.0")), family(&chrome("156.0.1.2")));
        assert_eq!(family(&chrome("156.0.0.0")), "Chrome on Linux");
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
        assert_ne!(family(&chrome("156.0.0.0")), family(firefox));
        assert_eq!(family("MyApp/2.1 (build 7)"), family("MyApp/2.2 (build 9)"));
        assert_ne!(family("MyApp/2.1"), family("python-requests/2.32"));
    }

    #[test]
    fn unknown_agents_are_shown_shortened_and_empty_ones_as_unknown() {
        assert_eq!(display_name(""), "Unknown device");
        assert_eq!(display_name("   "), "Unknown device");
        assert_eq!(display_name("latchkey-tests/1"), "latchkey-tests/1");
        let long = "x".repeat(100);
        assert_eq!(display_name(&long), format!("{}…", "x".repeat(40)));
        // Cut on a character boundary, never inside one.
        let wide = "é".repeat(50);
        assert_eq!(display_name(&wide), format!("{}…", "é".repeat(40)));
    }
}
