//! Reply addresses a platform handed out with a conversation's messages (Slack's slash
//! command `response_url`, [`crate::plugins::META_RESPONSE_URL`]): the way a reply still
//! reaches the user when the bot cannot post in the thread (not a member of the channel).
//!
//! Kept in memory per conversation, registered when a message carrying one is handled (the
//! URL itself stays in the message's inbox meta, so a message re-run after a restart brings
//! its address back, and a reply that finds none reads them back from the conversation's
//! recent messages once, [`ReplyAddresses::to_restore`]), each with its age and the posts it
//! made (after a restart those made before it are not known: Slack refuses a spent one). One
//! is usable while younger than [`LIFETIME`] and under [`USES`] posts (Slack: 30 minutes, 5
//! responses). The URLs are capabilities: never logged, never shown (`Debug` names none).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// How long an address is used after its message arrived: Slack's 30 minutes, less a
/// margin for the time between Slack's POST and the message's storing.
pub const LIFETIME: chrono::Duration = chrono::Duration::seconds(30 * 60 - 30);
/// Posts one address takes (Slack: "up to 5 times within 30 minutes").
pub const USES: usize = 5;

#[derive(Clone)]
struct Address {
    url: String,
    given: DateTime<Utc>,
    used: usize,
}

/// A usable address: the URL and the posts it has left.
pub struct Usable {
    /// The capability URL (never log it).
    pub url: String,
    /// Posts it may still make.
    pub left: usize,
}

impl std::fmt::Debug for Usable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usable")
            .field("url", &"<redacted>")
            .field("left", &self.left)
            .finish()
    }
}

/// Every conversation's reply addresses.
#[derive(Default)]
pub struct ReplyAddresses {
    by_conversation: Mutex<HashMap<String, Vec<Address>>>,
    /// Conversations whose addresses were read back from their stored messages.
    restored: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for ReplyAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyAddresses(<redacted>)")
    }
}

impl ReplyAddresses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Address>>> {
        self.by_conversation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `url`, handed out with a message of `conversation` that arrived at `given`
    /// (once: a message handled again keeps its count).
    pub fn keep(&self, conversation: &str, url: &str, given: DateTime<Utc>) {
        let mut all = self.lock();
        let list = all.entry(conversation.to_string()).or_default();
        if !list.iter().any(|a| a.url == url) {
            list.push(Address {
                url: url.to_string(),
                given,
                used: 0,
            });
        }
    }

    /// The newest address of `conversation` still usable at `now`; spent and expired ones
    /// are forgotten.
    pub fn newest(&self, conversation: &str, now: DateTime<Utc>) -> Option<Usable> {
        let mut all = self.lock();
        let list = all.get_mut(conversation)?;
        list.retain(|a| a.used < USES && now - a.given < LIFETIME);
        let newest = list.iter().max_by_key(|a| a.given).map(|a| Usable {
            url: a.url.clone(),
            left: USES - a.used,
        });
        if list.is_empty() {
            all.remove(conversation);
        }
        newest
    }

    /// `url` of `conversation` made `posts` more posts.
    pub fn used(&self, conversation: &str, url: &str, posts: usize) {
        if let Some(a) = self
            .lock()
            .get_mut(conversation)
            .and_then(|l| l.iter_mut().find(|a| a.url == url))
        {
            a.used = a.used.saturating_add(posts);
        }
    }

    /// Whether `conversation`'s addresses are still to be read back from its stored messages:
    /// `true` once per conversation (a restart forgets what was kept; reading them again
    /// later would bring back those spent since).
    pub fn to_restore(&self, conversation: &str) -> bool {
        self.restored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conversation.to_string())
    }

    /// `url` of `conversation` refused a post: not used again.
    pub fn spent(&self, conversation: &str, url: &str) {
        self.used(conversation, url, USES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_address_serves_until_its_five_posts_or_thirty_minutes_are_gone() {
        let r = ReplyAddresses::default();
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("time");
        let min = chrono::Duration::minutes;
        assert!(r.newest("slack:C1", t0).is_none());
        r.keep("slack:C1", "https://h/old", t0);
        r.keep("slack:C1", "https://h/new", t0 + min(1));
        r.keep("slack:C1", "https://h/new", t0 + min(2));
        let u = r.newest("slack:C1", t0 + min(2)).expect("usable");
        assert_eq!((u.url.as_str(), u.left), ("https://h/new", 5));
        r.used("slack:C1", "https://h/new", 3);
        assert_eq!(r.newest("slack:C1", t0 + min(2)).map(|u| u.left), Some(2));
        r.used("slack:C1", "https://h/new", 2);
        let u = r.newest("slack:C1", t0 + min(2)).expect("the older one");
        assert_eq!(u.url, "https://h/old");
        assert!(r.newest("slack:C1", t0 + min(30)).is_none(), "expired");
        assert!(r.newest("slack:C2", t0).is_none());
        r.keep("slack:C2", "https://h/x", t0);
        r.spent("slack:C2", "https://h/x");
        assert!(r.newest("slack:C2", t0).is_none());
        assert!(!format!("{r:?}").contains("https://"));
    }
}
