//! Architecture invariants that a test can enforce (ARCHITECTURE.md): every source file says
//! what it owns; SQL and sqlx stay in `latchkey-store`; axum and HTTP stay out of the domain;
//! time comes only from the `Clock`. And the documentation points at real things: every
//! relative link in the README, ARCHITECTURE.md and the book (`docs/`) reaches an existing
//! file (and heading), and every path ARCHITECTURE.md names exists. These read files only;
//! they start no server.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crate_sources(name: &str) -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(name);
    let mut files = Vec::new();
    for sub in ["src", "tests", "benches"] {
        let dir = root.join(sub);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
    }
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

const CRATES: [&str; 7] = [
    "latchkey-proto",
    "latchkey-core",
    "latchkey-store",
    "latchkey-http",
    "latchkey",
    "latchkey-testkit",
    "latchkey-verify",
];

#[test]
fn every_source_file_starts_with_a_module_doc() {
    for name in CRATES {
        for (path, text) in crate_sources(name) {
            assert!(text.trim_start().starts_with("//!"), "{} must start with a //! comment", path.display());
        }
    }
}

#[test]
fn layering_is_respected() {
    for (path, text) in crate_sources("latchkey-core").into_iter().chain(crate_sources("latchkey-proto")) {
        for banned in ["axum", "sqlx", "hyper", "reqwest"] {
            assert!(!text.contains(&format!("{banned}::")), "{} uses {banned}", path.display());
        }
    }
    for name in ["latchkey-core", "latchkey-http", "latchkey-proto", "latchkey"] {
        for (path, text) in crate_sources(name) {
            assert!(!text.contains("sqlx::"), "{} uses sqlx outside the store", path.display());
            for sql in ["SELECT ", "INSERT INTO", "UPDATE sessions", "DELETE FROM"] {
                assert!(!text.contains(sql), "{} contains SQL", path.display());
            }
        }
    }
    for (path, text) in crate_sources("latchkey-store") {
        assert!(!text.contains("axum::"), "{} uses axum", path.display());
    }
}

#[test]
fn time_comes_from_the_clock() {
    for name in ["latchkey-core", "latchkey-store", "latchkey-http"] {
        for (path, text) in crate_sources(name) {
            if path.ends_with("clock.rs") {
                continue;
            }
            assert!(!text.contains("SystemTime::now"), "{} reads the wall clock", path.display());
            assert!(!text.contains("now_utc"), "{} reads the wall clock", path.display());
        }
    }
}

// Documentation. Markdown is read the simple way: fenced code blocks are skipped, inline code
// spans are tracked per paragraph, and headings become anchors by the slug rule GitHub and
// mdBook share.

/// The repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap().to_path_buf()
}

/// README.md, ARCHITECTURE.md and every Markdown file of the book, except its build output.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("docs/book") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let root = repo_root();
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    walk(&root.join("docs"), &mut files);
    files
}

/// The paragraphs of a Markdown text outside fenced code blocks, each as its lines.
fn paragraphs(text: &str) -> Vec<Vec<&str>> {
    let mut paragraphs = vec![Vec::new()];
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            paragraphs.push(Vec::new());
        } else if !in_fence && line.trim().is_empty() {
            paragraphs.push(Vec::new());
        } else if !in_fence {
            paragraphs.last_mut().unwrap().push(line);
        }
    }
    paragraphs.retain(|p| !p.is_empty());
    paragraphs
}

/// A paragraph split into prose (`.0`, with code spans blanked) and its code spans (`.1`).
fn split_code_spans(paragraph: &[&str]) -> (String, Vec<String>) {
    let (mut prose, mut spans, mut in_code) = (String::new(), Vec::new(), false);
    for c in paragraph.join("\n").chars() {
        match (c, in_code) {
            ('`', false) => {
                in_code = true;
                spans.push(String::new());
            }
            ('`', true) => in_code = false,
            (c, true) => spans.last_mut().unwrap().push(if c == '\n' { ' ' } else { c }),
            (c, false) => prose.push(c),
        }
    }
    (prose, spans)
}

/// The targets of the links in a Markdown text: `[text](target "title")` and `[label]: target`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for paragraph in paragraphs(text) {
        let (prose, _) = split_code_spans(&paragraph);
        for (i, _) in prose.match_indices("](") {
            let rest = &prose[i + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            targets.push(rest[..end].split_whitespace().next().unwrap_or("").to_owned());
        }
        for line in prose.lines() {
            let line = line.trim_start();
            if let Some(close) = line.find("]: ").filter(|_| line.starts_with('[')) {
                targets.push(line[close + 3..].split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    }
    targets
}

/// The anchor GitHub and mdBook give a heading: lower case, spaces to `-`, and every other
/// character that is not alphanumeric, `-` or `_` dropped (a repeated heading gets `-1`, ...).
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_lowercase().collect::<String>()),
            c if c.is_whitespace() => Some("-".to_owned()),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings.
fn anchors(text: &str) -> Vec<String> {
    let mut anchors: Vec<String> = Vec::new();
    for paragraph in paragraphs(text) {
        for heading in paragraph.into_iter().filter_map(|l| l.strip_prefix('#')) {
            let Some(title) = heading.trim_start_matches('#').strip_prefix(' ') else { continue };
            let base = slug(title.trim());
            let repeats = anchors.iter().filter(|a| **a == base).count();
            anchors.push(base.clone());
            if repeats > 0 {
                anchors.push(format!("{base}-{repeats}"));
            }
        }
    }
    anchors
}

#[test]
fn documentation_links_point_at_existing_files_and_headings() {
    let root = repo_root();
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = match path {
                "" => file.clone(),
                p if p.starts_with('/') => root.join(p.trim_start_matches('/')),
                p => file.parent().unwrap().join(p),
            };
            let shown = file.strip_prefix(&root).unwrap().display();
            if !linked.exists() {
                broken.push(format!("{shown}: {target} (no such file)"));
            } else if !anchor.is_empty() && linked.extension().is_some_and(|e| e == "md") {
                let headings = anchors(&std::fs::read_to_string(&linked).unwrap());
                if !headings.iter().any(|h| h == anchor) {
                    broken.push(format!("{shown}: {target} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn paths_named_in_architecture_md_exist() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for paragraph in paragraphs(&text) {
        for span in split_code_spans(&paragraph).1 {
            // A path: only path characters, relative to the root (routes like `/auth/refresh`
            // start with `/` and are not paths), with a `/` or a file name of a kind Latchkey
            // keeps (`.rs` alone is an extension, not a file).
            let is_file_name =
                !span.starts_with('.') && [".rs", ".toml", ".sql", ".md"].iter().any(|e| span.ends_with(e));
            let is_path_like = !span.starts_with('/')
                && span.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
                && (span.contains('/') || is_file_name);
            if is_path_like && !root.join(&span).exists() {
                missing.push(span);
            }
        }
    }
    assert!(missing.is_empty(), "ARCHITECTURE.md names paths that do not exist: {missing:?}");
}

#[test]
fn markdown_helpers_read_links_code_and_headings() {
    let text = "# Top\n\nSee [a](b.md#c-d) and `[not](a-link)`, `crates/x.rs`.\n\n```sh\n# not a heading [x](y)\n```\n## C, d?\n## Top\n[label]: ../e.md\n";
    assert_eq!(link_targets(text), ["b.md#c-d", "../e.md"]);
    assert_eq!(anchors(text), ["top", "c-d", "top", "top-1"]);
    assert_eq!(split_code_spans(&["a `b/c.rs` d `e`"]).1, ["b/c.rs", "e"]);
    assert_eq!(slug("Rust: `latchkey-client` (2x)"), "rust-latchkey-client-2x");
    assert_eq!(link_targets("[x](a.md \"title\") [y](#z)"), ["a.md", "#z"]);
}
