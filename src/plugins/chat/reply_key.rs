//! What makes the attempts at one stored reply one post ([`ChatPlatform::send_once`]): a key
//! that is the same at every attempt, the time the reply was stored, and whether an earlier
//! attempt may have posted it already.
//!
//! [`ChatPlatform::send_once`]: crate::plugins::ChatPlatform::send_once

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Duration, Utc};

use crate::plugins::{PluginError, PluginResult};

/// How far before a reply's storing a platform's thread is read for it: the platform's clock
/// and the database's may disagree by this much.
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// Pages of a thread a platform reads at most when looking for an earlier post.
pub const MARK_PAGES: usize = 5;

/// Characters of a [`ReplyKey::mark`]: Discord's `nonce` takes at most 25.
const MARK_LEN: usize = 25;

/// One stored reply (or one of its parts) across its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyKey {
    key: String,
    stored_at: DateTime<Utc>,
    maybe_posted: bool,
}

impl ReplyKey {
    /// The reply stored under `key` (the same at every attempt) at `stored_at`;
    /// `maybe_posted` when an earlier attempt may have posted it (a restart after the post, an
    /// answer lost on the way back).
    pub fn new(key: impl Into<String>, stored_at: DateTime<Utc>, maybe_posted: bool) -> Self {
        ReplyKey {
            key: key.into(),
            stored_at,
            maybe_posted,
        }
    }

    /// The key of the reply's part `part` (a reply split under the platform's limit).
    #[must_use]
    pub fn part(&self, part: usize) -> Self {
        ReplyKey {
            key: format!("{}/{part}", self.key),
            ..self.clone()
        }
    }

    /// The same key for an attempt after one that failed: its post may have been made.
    #[must_use]
    pub fn again(&self) -> Self {
        ReplyKey {
            maybe_posted: true,
            ..self.clone()
        }
    }

    /// The mark of piece `piece` of the post, `text` its text: 25 hex characters of a
    /// SHA-256 over the key, the piece and the text, so that the same key from another
    /// database (reply ids begun afresh) cannot stand for another reply.
    pub fn mark(&self, piece: usize, text: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(self.key.as_bytes())
            .chain_update(piece.to_le_bytes())
            .chain_update(text.as_bytes())
            .finalize();
        hex::encode(digest)[..MARK_LEN].to_string()
    }

    /// From when a platform looks in its thread for an earlier post of this reply before
    /// posting: `None` on a first attempt (nothing can be there, nothing is read).
    pub fn look_since(&self) -> Option<DateTime<Utc>> {
        self.maybe_posted.then(|| self.stored_at - CLOCK_SKEW)
    }
}

/// The marks found in a thread, each with the platform id of its post.
pub type Marks = BTreeMap<String, String>;

/// Posts `pieces` (one reply split under the platform's limits) in order, each through
/// `post(piece, its mark)`, and answers the last post's id. With a `key` whose reply may be out
/// already ([`ReplyKey::look_since`]), `look` first reads the marks posted in the thread
/// since then, and a piece found there is not posted again (its earlier post's id stands). A
/// read the platform refuses for good (a missing scope) reads as none: the reply is posted
/// again rather than never; a retriable one fails the attempt.
///
/// # Errors
/// A failed read (retriable) or post; `Invalid` for no piece.
pub async fn post_pieces<L, LF, P, PF>(
    pieces: Vec<String>,
    key: Option<&ReplyKey>,
    look: L,
    mut post: P,
) -> PluginResult<String>
where
    L: FnOnce(DateTime<Utc>) -> LF,
    LF: Future<Output = PluginResult<Marks>>,
    P: FnMut(String, Option<String>) -> PF,
    PF: Future<Output = PluginResult<Option<String>>>,
{
    let out = match key.and_then(ReplyKey::look_since) {
        None => Marks::new(),
        Some(since) => match look(since).await {
            Ok(marks) => marks,
            Err(e) if e.is_retriable() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the thread for a reply posted before; posting it");
                Marks::new()
            }
        },
    };
    let mut last = None;
    for (i, piece) in pieces.into_iter().enumerate() {
        let mark = key.map(|k| k.mark(i, &piece));
        match mark.as_ref().and_then(|m| out.get(m)) {
            Some(posted) => last = Some(posted.clone()),
            None => last = post(piece, mark).await?,
        }
    }
    last.ok_or_else(|| PluginError::Invalid("nothing to send".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_differ_by_key_part_piece_and_text_and_only_a_repeat_looks() {
        let at = Utc::now();
        let k = ReplyKey::new("slack:C1/7", at, false);
        assert_eq!(k.mark(0, "hi").len(), MARK_LEN);
        assert_eq!(k.mark(0, "hi"), k.again().mark(0, "hi"));
        let marks = [
            k.mark(0, "hi"),
            k.mark(1, "hi"),
            k.mark(0, "ho"),
            k.part(0).mark(0, "hi"),
            ReplyKey::new("slack:C1/8", at, false).mark(0, "hi"),
        ];
        let unique: std::collections::BTreeSet<_> = marks.iter().collect();
        assert_eq!(unique.len(), marks.len(), "{marks:?}");
        assert_eq!(k.look_since(), None);
        assert_eq!(k.again().look_since(), Some(at - CLOCK_SKEW));
        assert_eq!(k.part(2).again().look_since(), Some(at - CLOCK_SKEW));
    }

    /// Posts `pieces` under `key` with `look` answering `found` (or failing with `error`):
    /// (the pieces posted, whether the thread was read, the id answered).
    async fn run(
        key: &ReplyKey,
        found: &[(usize, &str)],
        error: Option<PluginError>,
    ) -> (Vec<String>, bool, PluginResult<String>) {
        let pieces = vec!["one".to_string(), "two".to_string(), "three".to_string()];
        let marks: Marks = found
            .iter()
            .map(|(i, id)| (key.mark(*i, &pieces[*i]), id.to_string()))
            .collect();
        let read = std::sync::atomic::AtomicBool::new(false);
        let posted = std::sync::Mutex::new(Vec::new());
        let look = |_| async {
            read.store(true, std::sync::atomic::Ordering::SeqCst);
            error.map_or(Ok(marks), Err)
        };
        let r = post_pieces(pieces, Some(key), look, |piece, mark| {
            assert!(mark.is_some(), "a keyed piece without its mark");
            posted.lock().expect("lock").push(piece.clone());
            async move { Ok(Some(format!("id-{piece}"))) }
        })
        .await;
        let posted = posted.into_inner().expect("lock");
        (posted, read.into_inner(), r)
    }

    #[tokio::test]
    async fn only_the_pieces_not_found_are_posted_and_only_a_repeat_reads() {
        let key = ReplyKey::new("slack:C1/7", Utc::now(), false);
        let (posted, read, r) = run(&key, &[(0, "id-old")], None).await;
        assert_eq!((posted.len(), read), (3, false), "a first attempt");
        assert_eq!(r.expect("posted"), "id-three");
        let (posted, read, r) = run(&key.again(), &[(0, "id-old"), (2, "id-last")], None).await;
        assert_eq!((posted, read), (vec!["two".to_string()], true));
        assert_eq!(
            r.expect("posted"),
            "id-last",
            "the last piece's earlier post"
        );
    }

    #[tokio::test]
    async fn a_read_refused_for_good_posts_and_one_refused_for_now_fails() {
        let key = ReplyKey::new("github:a/b#1/7", Utc::now(), true);
        let scope = PluginError::Invalid("missing_scope".into());
        let (posted, _, r) = run(&key, &[], Some(scope)).await;
        assert_eq!((posted.len(), r.is_ok()), (3, true));
        let limited = PluginError::RateLimited {
            kind: "secondary",
            retry_after: std::time::Duration::from_secs(1),
        };
        let (posted, _, r) = run(&key, &[], Some(limited)).await;
        assert!(posted.is_empty(), "{posted:?}");
        assert!(r.expect_err("retriable").is_retriable());
    }
}
