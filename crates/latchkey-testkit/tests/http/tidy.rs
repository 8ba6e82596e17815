//! Architecture invariants that a test can enforce (ARCHITECTURE.md): every source file says
//! what it owns; SQL and sqlx stay in `latchkey-store`; axum and HTTP stay out of the domain;
//! time comes only from the `Clock`.

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
