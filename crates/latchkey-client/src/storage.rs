//! Where the session's tokens are kept between runs: the app's choice through
//! [`TokenStorage`]; [`MemoryStorage`] (the default) keeps nothing beyond the process.

use std::collections::HashMap;
use std::sync::Mutex;

/// A small key-value store for the session (strings only).
#[async_trait::async_trait]
pub trait TokenStorage: Send + Sync {
    /// The value under `key`.
    async fn get(&self, key: &str) -> Option<String>;
    /// Stores `value` under `key`.
    async fn set(&self, key: &str, value: String);
    /// Removes `key`.
    async fn remove(&self, key: &str);
}

/// Storage in memory: the default.
#[derive(Default)]
pub struct MemoryStorage(Mutex<HashMap<String, String>>);

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStorage")
    }
}

#[async_trait::async_trait]
impl TokenStorage for MemoryStorage {
    async fn get(&self, key: &str) -> Option<String> {
        self.0.lock().ok()?.get(key).cloned()
    }

    async fn set(&self, key: &str, value: String) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_owned(), value);
        }
    }

    async fn remove(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}
