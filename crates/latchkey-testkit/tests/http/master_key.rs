//! Signing keys at rest (SPEC 3; issue 12, items 8 and 9): the master key is 32 random
//! bytes in base64 and nothing weaker starts; a process without it never writes a key into
//! a database whose keys are sealed; no plaintext key is used while it is set, and
//! `latchkey keys seal` migrates an unsealed database. Driven through the real CLI paths.

use std::collections::HashMap;

/// Two keys as `openssl rand -base64 32` prints them.
const KEY: &str = "q3Jb6Xl0tL2S9p+0w6b0Gm1yZk2m3JxM3d8h2Qd0p1U=";
const OTHER_KEY: &str = "Zt0e5r3Yv3b7a9o1mK8sQ2wE4rT6yU8iO0pA1sD3fG4=";

/// Runs `latchkey ARGS --database-url URL` with exactly the environment `env`.
async fn cli(url: &str, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<String> {
    // The suite's log capture must be the process's subscriber before the CLI installs its own.
    let _ = latchkey_testkit::captured_logs();
    let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let mut argv = vec!["latchkey", "--database-url", url];
    argv.extend_from_slice(args);
    let mut input = std::io::Cursor::new(Vec::new());
    let mut out = Vec::new();
    latchkey::cli::run_args_with_env(&argv, &|k| env.get(k).cloned(), &mut input, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

/// The stored keys' formats (`LKP1`, `LKE2`), by kid.
async fn formats(url: &str) -> Vec<(String, String)> {
    let store = latchkey_store::open_with(url, 2).await.unwrap();
    let keys = store.list_signing_keys().await.unwrap();
    keys.into_iter().map(|k| (k.kid, String::from_utf8_lossy(&k.private_key[..4]).into_owned())).collect()
}

fn temp_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    (dir, url)
}

#[tokio::test]
async fn issue_12_weak_master_keys_are_refused_at_start() {
    let (_dir, url) = temp_db();
    for weak in ["a", "a long passphrase that is not base64", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
    {
        let err = cli(&url, &[("LATCHKEY_MASTER_KEY", weak)], &["keys", "list"]).await.unwrap_err();
        assert!(format!("{err:#}").contains("openssl rand -base64 32"), "{err:#}");
    }
    // Nothing was created by the refused starts.
    assert!(formats(&url).await.is_empty());
    cli(&url, &[("LATCHKEY_MASTER_KEY", KEY)], &["keys", "list"]).await.unwrap();
    let keys = formats(&url).await;
    assert_eq!(keys.len(), 2, "one access-token and one ID-token key");
    assert!(keys.iter().all(|(_, f)| f == "LKE2"), "{keys:?}");
}

#[tokio::test]
async fn issue_12_a_process_without_the_master_key_never_writes_a_key_beside_sealed_ones() {
    let (_dir, url) = temp_db();
    cli(&url, &[("LATCHKEY_MASTER_KEY", KEY)], &["user", "list"]).await.unwrap();
    let before = formats(&url).await;
    // Every command starts the service, and the service's maintenance creates keys when an
    // algorithm has none or a rotation is due: here a new access-token algorithm.
    for args in [&["user", "list"][..], &["keys", "rotate"], &["keys", "list"]] {
        let err = cli(&url, &[("LATCHKEY_ACCESS_TOKEN_ALG", "ES256")], args).await.unwrap_err();
        assert!(format!("{err:#}").contains("LATCHKEY_MASTER_KEY"), "{err:#}");
        assert_eq!(formats(&url).await, before, "no key written by {args:?}");
    }
    // Another master key is refused too, and writes nothing.
    let err = cli(
        &url,
        &[("LATCHKEY_MASTER_KEY", OTHER_KEY), ("LATCHKEY_ACCESS_TOKEN_ALG", "ES256")],
        &["keys", "list"],
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("LATCHKEY_MASTER_KEY"), "{err:#}");
    assert_eq!(formats(&url).await, before);
    // With the right key, the new algorithm's key is created sealed.
    cli(&url, &[("LATCHKEY_MASTER_KEY", KEY), ("LATCHKEY_ACCESS_TOKEN_ALG", "ES256")], &["keys", "list"])
        .await
        .unwrap();
    let after = formats(&url).await;
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.iter().all(|(_, f)| f == "LKE2"), "{after:?}");
}

#[tokio::test]
async fn issue_12_plaintext_keys_are_refused_with_a_master_key_until_sealed() {
    let (_dir, url) = temp_db();
    // A database started without a master key has plaintext keys.
    cli(&url, &[], &["keys", "list"]).await.unwrap();
    let plain = formats(&url).await;
    assert!(plain.iter().all(|(_, f)| f == "LKP1"), "{plain:?}");
    // A process with the master key refuses to use them, and says what to do.
    let err = cli(&url, &[("LATCHKEY_MASTER_KEY", KEY)], &["keys", "list"]).await.unwrap_err();
    assert!(format!("{err:#}").contains("latchkey keys seal"), "{err:#}");
    // `keys seal` needs the master key.
    assert!(cli(&url, &[], &["keys", "seal"]).await.is_err());
    let out = cli(&url, &[("LATCHKEY_MASTER_KEY", KEY)], &["keys", "seal"]).await.unwrap();
    let sealed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(sealed["sealed"].as_array().unwrap().len(), plain.len());
    let now = formats(&url).await;
    assert!(now.iter().all(|(_, f)| f == "LKE2"), "{now:?}");
    assert_eq!(
        now.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        plain.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    // Sealing again changes nothing; the keys now serve with the master key only.
    let again = cli(&url, &[("LATCHKEY_MASTER_KEY", KEY)], &["keys", "seal"]).await.unwrap();
    assert!(again.contains("\"sealed\":[]"), "{again}");
    cli(&url, &[("LATCHKEY_MASTER_KEY", KEY)], &["keys", "list"]).await.unwrap();
    assert!(cli(&url, &[], &["keys", "list"]).await.is_err());
    assert!(cli(&url, &[("LATCHKEY_MASTER_KEY", OTHER_KEY)], &["keys", "seal"]).await.is_err());
}
