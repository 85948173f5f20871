//! The REST client the CLI's client verbs use. Every call has a timeout; errors carry the
//! server's `{"error": {"code", "message"}}` message.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Connect timeout for every call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of a whole non-streaming request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach the Flotilla server at {url}: {source}{}", cause_of(.source))]
    Unreachable {
        /// Server URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{message} (HTTP {status})")]
    Api {
        /// Status.
        status: StatusCode,
        /// Server's message.
        message: String,
    },
    /// The answer was not what we expected.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// The innermost cause of a transport error, e.g. `: Connection refused (os error 111)`, or
/// nothing when it has none: reqwest's own message ("error sending request") does not say
/// whether the server refused, reset or never answered.
fn cause_of(e: &reqwest::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    if std::ptr::addr_eq(inner, e as &dyn std::error::Error) {
        String::new()
    } else {
        format!(": {inner}")
    }
}

/// A client for one server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:7700`).
    ///
    /// # Errors
    /// `Decode` if the HTTP client cannot be built.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn finish<T: DeserializeOwned>(
        &self,
        r: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let res =
            r.timeout(REQUEST_TIMEOUT)
                .send()
                .await
                .map_err(|source| ClientError::Unreachable {
                    url: self.base.clone(),
                    source,
                })?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("request failed")
                .to_string();
            return Err(ClientError::Api { status, message });
        }
        serde_json::from_value(body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// GET `path` as JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.finish(self.request(Method::GET, path)).await
    }

    /// POST `body` to `path`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ClientError> {
        self.finish(self.request(Method::POST, path).json(body))
            .await
    }

    /// Opens the SSE stream after `after`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn events(&self, after: i64) -> Result<reqwest::Response, ClientError> {
        let res = self
            .request(Method::GET, "/api/v1/events")
            .header("Last-Event-ID", after.to_string())
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        if !res.status().is_success() {
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            return Err(ClientError::Api {
                status,
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_string(),
            });
        }
        Ok(res)
    }
}

/// Splits an SSE byte stream into `(id, data)` events; keeps partial input in `buf`.
pub fn parse_sse(buf: &mut String) -> Vec<(Option<i64>, String)> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut id = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        if !data.is_empty() {
            out.push((id, data));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_are_split_and_partial_input_kept() {
        let mut b = String::from(": keep-alive\n\nid: 3\nevent: x\ndata: {\"a\":1}\n\nid: 4\nda");
        let ev = parse_sse(&mut b);
        assert_eq!(ev, vec![(Some(3), "{\"a\":1}".to_string())]);
        assert_eq!(b, "id: 4\nda");
    }

    #[tokio::test]
    async fn an_unreachable_server_names_the_transport_cause() {
        // A port bound and closed at once: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None).expect("client");
        let err = client
            .finish::<Value>(client.request(Method::GET, "/api/v1/health"))
            .await
            .expect_err("nothing listens");
        let text = err.to_string();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
