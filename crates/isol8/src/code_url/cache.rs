//! [`CodeCache`]: code fetched from URLs, kept in memory for `remoteCode.cacheTtl`
//! seconds (`remoteCode.enableCache`).
//!
//! An entry is keyed by everything that decided how it was fetched and checked: the URL
//! as given, the expected SHA-256 (if any; the cached code was verified against it) and
//! whether the request allowed plain http (which decides which redirects were followed).
//! The policy checks of the URL itself run before every lookup, so a cached entry never
//! serves a request the fetcher would refuse. The cache is bounded in entries and bytes;
//! the entry expiring first makes room. Time is tokio's clock, so tests can advance it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Entries kept at most.
pub const MAX_ENTRIES: usize = 256;
/// Bytes of code kept at most (all entries together).
pub const MAX_BYTES: usize = 64 << 20;
/// The longest lifetime of an entry; a longer `cacheTtl` counts as this.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a cached fetch is looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The URL as the request gave it.
    pub url: String,
    /// The expected SHA-256, lower-case hex, if the request gave one.
    pub hash: Option<String>,
    /// The request allowed plain http (`allowInsecureCodeUrl`).
    pub insecure: bool,
}

#[derive(Debug)]
struct Entry {
    code: Arc<str>,
    expires: Instant,
}

/// Fetched code by [`Key`], each entry for `ttl`; shared by clones (an engine and its
/// siblings).
#[derive(Debug, Clone)]
pub struct CodeCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<Key, Entry>>>,
}

impl CodeCache {
    /// A cache whose entries live `ttl` (at most [`MAX_TTL`]); `None` for a zero `ttl`.
    pub fn new(ttl: Duration) -> Option<CodeCache> {
        (!ttl.is_zero()).then(|| CodeCache {
            ttl: ttl.min(MAX_TTL),
            entries: Arc::default(),
        })
    }

    /// How long an entry lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The code cached under `key`, unless it expired.
    pub fn get(&self, key: &Key) -> Option<Arc<str>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some(e) if e.expires > now => Some(e.code.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `code` under `key` for the cache's lifetime, making room if needed (code
    /// larger than the whole cache is not kept).
    pub fn put(&self, key: Key, code: &str) {
        if code.len() > MAX_BYTES {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|k, e| e.expires > now && *k != key);
        let mut bytes: usize = entries.values().map(|e| e.code.len()).sum();
        while !entries.is_empty()
            && (entries.len() >= MAX_ENTRIES || bytes + code.len() > MAX_BYTES)
        {
            let Some(first) = entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = entries.remove(&first) {
                bytes -= e.code.len();
            }
        }
        entries.insert(
            key,
            Entry {
                code: code.into(),
                expires: now + self.ttl,
            },
        );
    }

    /// Entries held now (expired ones included until they are next touched).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or_default()
    }

    /// No entries at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> Key {
        Key {
            url: url.into(),
            hash: None,
            insecure: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl_and_room_is_made_by_expiry_order() {
        assert!(
            CodeCache::new(Duration::ZERO).is_none(),
            "ttl 0 is no cache"
        );
        let cache = CodeCache::new(Duration::from_secs(60)).expect("cache");
        cache.put(key("a"), "A");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(cache.get(&key("a")).as_deref(), Some("A"));
        // The same URL with another hash or insecurity is another entry.
        let mut other = key("a");
        other.hash = Some("00".into());
        assert_eq!(cache.get(&other), None);
        other.hash = None;
        other.insecure = true;
        assert_eq!(cache.get(&other), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(&key("a")), None, "expired at the ttl");
        assert!(cache.is_empty());

        // Full: the entry expiring first goes.
        for i in 0..MAX_ENTRIES {
            cache.put(key(&i.to_string()), "x");
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        cache.put(key("new"), "y");
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert_eq!(cache.get(&key("0")), None);
        assert_eq!(cache.get(&key("1")).as_deref(), Some("x"));
        assert_eq!(cache.get(&key("new")).as_deref(), Some("y"));
        // Bytes are bounded too.
        let big = "z".repeat(MAX_BYTES / 2 + 1);
        cache.put(key("big1"), &big);
        cache.put(key("big2"), &big);
        assert_eq!(cache.get(&key("big1")), None, "made room for big2");
        assert!(cache.get(&key("big2")).is_some());
        cache.put(key("huge"), &"h".repeat(MAX_BYTES + 1));
        assert_eq!(cache.get(&key("huge")), None, "larger than the cache");
    }
}
