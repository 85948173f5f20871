//! Discord's REST rate limits as a client must keep them ("Rate Limits" in Discord's API
//! reference):
//!
//! - A per-route limit is identified by the `X-RateLimit-Bucket` hash an answer names (routes
//!   may share one), counted separately for each top-level resource in the path, the *major
//!   parameter*: `channel_id`, `guild_id`, or `webhook_id` (+ token). A hold is therefore
//!   keyed by bucket and major parameter; until a route's bucket is known, by the route
//!   (method and path with the other ids left out) and major parameter.
//! - An answer with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset-After: <seconds>`
//!   means the bucket is spent: the next request on it waits for the reset instead of
//!   meeting a 429. A 429 on a bucket (`X-RateLimit-Scope: user` or `shared`) holds it the
//!   same way for every other caller while the one that met it waits and tries again.
//! - A 429 for the global limit (`X-RateLimit-Global: true`, `X-RateLimit-Scope: global`, or
//!   `"global": true` in the body, with `retry_after` in seconds, a float) holds every route.
//!
//! State only: the clock comes in as an argument, the sleeping is the caller's.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use tokio::time::Instant;

/// Longest bucket reset honoured from one answer: a wrong header never stalls a route longer.
const MAX_RESET: Duration = Duration::from_secs(60);

/// A request's place in Discord's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Method and path with the ids other than the major parameter replaced
    /// (`POST /channels/{c}/messages`, `PATCH /channels/{c}/messages/{id}`).
    pub route: String,
    /// The top-level resource the limit is counted for (`channel:123`), or `-` for none.
    pub major: String,
}

impl Route {
    /// The route of `method path` (query and fragment ignored).
    pub fn of(method: &str, path: &str) -> Route {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut major = "-".to_string();
        let mut shape = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let prev = i.checked_sub(1).and_then(|j| parts.get(j)).copied();
            let kind = match prev {
                Some("channels") if i == 1 => Some("channel"),
                Some("guilds") if i == 1 => Some("guild"),
                Some("webhooks") if i == 1 => Some("webhook"),
                _ => None,
            };
            if let Some(kind) = kind {
                // A webhook's limits are counted per id and token; the id alone names it
                // here (the token is a credential, and belongs to that one id).
                major = format!("{kind}:{p}");
                shape.push(format!("{{{kind}}}"));
            } else if i > 0 && parts[0] == "webhooks" && i == 2 {
                shape.push("{token}".into());
            } else if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                shape.push("{id}".into());
            } else {
                shape.push((*p).to_string());
            }
        }
        Route {
            route: format!("{} /{}", method.to_uppercase(), shape.join("/")),
            major,
        }
    }
}

/// What the bot knows of its limits: bucket hashes per route, holds per bucket and major
/// parameter, and the global hold.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// `X-RateLimit-Bucket` per route (without the major parameter).
    buckets: HashMap<String, String>,
    /// Until when each bucket (or route, while its bucket is unknown) of a major parameter is
    /// spent.
    holds: HashMap<(String, String), Instant>,
    /// Until when every request waits (a global 429).
    global: Option<Instant>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn header_f64(headers: &HeaderMap, name: &str) -> Option<f64> {
    header_str(headers, name)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// Waits while `r`'s bucket is spent or a global limit holds (again after each wait: another
/// answer may have spent it meanwhile). The one wait of the chat platform and the notifier.
pub async fn wait_for(limits: &std::sync::Mutex<RateLimits>, r: &Route) {
    loop {
        let until = limits
            .lock()
            .ok()
            .and_then(|l| l.wait_until(r, Instant::now()));
        match until {
            Some(t) => tokio::time::sleep_until(t).await,
            None => return,
        }
    }
}

impl RateLimits {
    fn key(&self, r: &Route) -> (String, String) {
        let limit = self
            .buckets
            .get(&r.route)
            .cloned()
            .unwrap_or_else(|| r.route.clone());
        (limit, r.major.clone())
    }

    /// Until when a request on `r` must wait, if it must (its bucket is spent or a global
    /// limit holds).
    pub fn wait_until(&self, r: &Route, now: Instant) -> Option<Instant> {
        let bucket = self.holds.get(&self.key(r)).copied();
        self.global
            .into_iter()
            .chain(bucket)
            .max()
            .filter(|t| *t > now)
    }

    /// Until when a global limit holds every route, if it does.
    pub fn global_hold(&self, now: Instant) -> Option<Instant> {
        self.global.filter(|t| *t > now)
    }

    /// Learns from one answer on `r` (every answer, the 429s included).
    pub fn observe(
        &mut self,
        r: &Route,
        status: u16,
        headers: &HeaderMap,
        body: &Value,
        now: Instant,
    ) {
        if status == 429 && is_global(headers, body) {
            if let Some(wait) = super::rate_limit_wait(headers, body) {
                let until = now + wait.min(super::MAX_RATE_LIMIT_WAIT);
                self.global = Some(self.global.map_or(until, |t| t.max(until)));
            }
            return;
        }
        if let Some(bucket) = header_str(headers, "x-ratelimit-bucket").filter(|b| !b.is_empty()) {
            self.buckets.insert(r.route.clone(), bucket.to_string());
        }
        let key = self.key(r);
        let remaining = header_f64(headers, "x-ratelimit-remaining");
        let reset = header_f64(headers, "x-ratelimit-reset-after")
            .map(|s| Duration::from_secs_f64(s).min(MAX_RESET));
        let spent = match (remaining, reset) {
            (Some(rem), Some(after)) if rem < 1.0 => Some(after),
            // A bucket's 429 names its wait in the body even without the headers.
            _ if status == 429 => super::rate_limit_wait(headers, body).map(|w| w.min(MAX_RESET)),
            _ => None,
        };
        match (spent, remaining) {
            (Some(after), _) => {
                let until = now + after;
                let held = self.holds.entry(key).or_insert(until);
                *held = (*held).max(until);
            }
            (None, Some(_)) => {
                self.holds.remove(&key);
            }
            (None, None) => {}
        }
    }
}

/// Whether a 429 is the global limit's.
fn is_global(headers: &HeaderMap, body: &Value) -> bool {
    header_str(headers, "x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || header_str(headers, "x-ratelimit-scope").is_some_and(|v| v == "global")
        || body["global"] == json!(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn routes_keep_the_major_parameter_and_drop_other_ids() {
        let r = Route::of("post", "/channels/123/messages");
        assert_eq!(
            (r.route.as_str(), r.major.as_str()),
            ("POST /channels/{channel}/messages", "channel:123")
        );
        let e = Route::of("PATCH", "/channels/123/messages/456");
        assert_eq!(e.route, "PATCH /channels/{channel}/messages/{id}");
        assert_eq!(e.major, "channel:123");
        let g = Route::of("GET", "/channels/9/messages?limit=50&before=1");
        assert_eq!(
            (g.route.as_str(), g.major.as_str()),
            ("GET /channels/{channel}/messages", "channel:9")
        );
        let w = Route::of("POST", "/webhooks/77/tok-en");
        assert_eq!(
            (w.route.as_str(), w.major.as_str()),
            ("POST /webhooks/{webhook}/{token}", "webhook:77")
        );
        let a = Route::of("PUT", "/applications/900/commands");
        assert_eq!(
            (a.route.as_str(), a.major.as_str()),
            ("PUT /applications/{id}/commands", "-")
        );
    }

    #[test]
    fn a_spent_bucket_holds_its_routes_for_that_channel_only() {
        let now = Instant::now();
        let mut l = RateLimits::default();
        let create = Route::of("POST", "/channels/1/messages");
        let edit = Route::of("PATCH", "/channels/1/messages/5");
        let other = Route::of("POST", "/channels/2/messages");
        let spent = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "2.5"),
            ("x-ratelimit-bucket", "abc"),
        ]);
        l.observe(&create, 200, &spent, &Value::Null, now);
        assert_eq!(
            l.wait_until(&create, now),
            Some(now + Duration::from_millis(2500))
        );
        assert_eq!(l.wait_until(&other, now), None, "another channel");
        // An edit in another bucket neither waits nor frees the create bucket.
        let fresh = headers(&[
            ("x-ratelimit-remaining", "4"),
            ("x-ratelimit-reset-after", "1"),
            ("x-ratelimit-bucket", "def"),
        ]);
        assert_eq!(l.wait_until(&edit, now), None);
        l.observe(&edit, 200, &fresh, &Value::Null, now);
        assert!(l.wait_until(&create, now).is_some());
        // A route sharing the bucket shares the hold; a fresh answer on it frees it.
        let shared = Route::of("DELETE", "/channels/1/messages/5");
        l.observe(
            &shared,
            200,
            &headers(&[("x-ratelimit-bucket", "abc")]),
            &Value::Null,
            now,
        );
        assert!(l.wait_until(&shared, now).is_some());
        l.observe(
            &create,
            200,
            &headers(&[
                ("x-ratelimit-remaining", "1"),
                ("x-ratelimit-reset-after", "1"),
                ("x-ratelimit-bucket", "abc"),
            ]),
            &Value::Null,
            now,
        );
        assert_eq!(l.wait_until(&shared, now), None);
        assert_eq!(l.wait_until(&create, now + Duration::from_secs(3)), None);
    }

    #[test]
    fn a_bucket_429_holds_the_bucket_and_a_global_one_every_route() {
        let now = Instant::now();
        let mut l = RateLimits::default();
        let create = Route::of("POST", "/channels/1/messages");
        let other = Route::of("POST", "/channels/2/messages");
        l.observe(
            &create,
            429,
            &headers(&[("retry-after", "2"), ("x-ratelimit-scope", "shared")]),
            &json!({"message": "You are being rate limited.", "retry_after": 1.5, "global": false}),
            now,
        );
        assert_eq!(
            l.wait_until(&create, now),
            Some(now + Duration::from_secs(2))
        );
        assert_eq!(l.wait_until(&other, now), None);
        l.observe(
            &other,
            429,
            &headers(&[("retry-after", "3"), ("x-ratelimit-scope", "global")]),
            &json!({"message": "You are being rate limited.", "retry_after": 3.0, "global": true}),
            now,
        );
        assert_eq!(l.global_hold(now), Some(now + Duration::from_secs(3)));
        assert!(l
            .wait_until(&Route::of("GET", "/gateway/bot"), now)
            .is_some());
    }
}
