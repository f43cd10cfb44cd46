//! The endpoints: their URLs, the order to try them in, and the short
//! while an endpoint that failed is tried last.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::Client;
use crate::error::{Error, Result};

/// How long an endpoint that failed is skipped before it is tried again
/// (unless every endpoint is failing).
const DOWN_BACKOFF: Duration = Duration::from_secs(2);

/// Accepts `http://host:port`, `https://host:port` and `host:port`.
pub(super) fn normalize_endpoint(raw: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidEndpoint {
        endpoint: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let s = raw.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_owned(), s),
    };
    match scheme.as_str() {
        "http" => {}
        "https" if cfg!(feature = "tls") => {}
        "https" => {
            return Err(bad(
                "https endpoints need TLS: build locker with the `tls` feature",
            ));
        }
        _ => return Err(bad("the scheme must be http:// or https://")),
    }
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err(bad("an endpoint is host:port, without a path"));
    }
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| bad("a port is needed, e.g. 127.0.0.1:2379"))?;
    if host.is_empty() || host == "[]" {
        return Err(bad("the host is empty"));
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("the port must be a number from 1 to 65535"));
    }
    Ok(format!("{scheme}://{hostport}"))
}

pub(super) struct Ep {
    pub(super) url: String,
    pub(super) channel: Channel,
    down_until: Mutex<Option<Instant>>,
}

impl Ep {
    pub(super) fn new(url: String, channel: Channel) -> Ep {
        Ep {
            url,
            channel,
            down_until: Mutex::new(None),
        }
    }

    fn is_down(&self, now: Instant) -> bool {
        crate::rt::lock(&self.down_until).is_some_and(|t| t > now)
    }

    pub(super) fn mark_down(&self) {
        *crate::rt::lock(&self.down_until) = Some(Instant::now() + DOWN_BACKOFF);
    }

    fn mark_up(&self) {
        *crate::rt::lock(&self.down_until) = None;
    }
}

impl Client {
    /// Endpoint indices in the order to try them: the preferred one, then
    /// the others round-robin; endpoints that failed lately go last.
    pub(super) fn order(&self) -> Vec<usize> {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        let now = Instant::now();
        let (mut up, down): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|i| (start + i) % n)
            .partition(|&i| !self.inner.endpoints[i].is_down(now));
        up.extend(down);
        up
    }

    /// Endpoint `i` answered: it is up, and the next calls start with it.
    pub(super) fn answered(&self, i: usize) {
        self.inner.endpoints[i].mark_up();
        self.inner.preferred.store(i, Ordering::Relaxed);
    }

    /// The endpoint with this URL answered (with a refusal, say): the next
    /// calls start with it.
    pub(super) fn prefer(&self, url: &str) {
        if let Some(i) = self.inner.endpoints.iter().position(|e| e.url == url) {
            self.answered(i);
        }
    }

    pub(crate) fn preferred_endpoint(&self) -> String {
        let i = self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len();
        self.inner.endpoints[i].url.clone()
    }

    /// Marks an endpoint as failing so the next calls prefer others.
    pub(crate) fn mark_down(&self, url: &str) {
        if self.inner.endpoints.len() > 1 {
            if let Some(ep) = self.inner.endpoints.iter().find(|e| e.url == url) {
                ep.mark_down();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_or_rejected() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize_endpoint("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(
            normalize_endpoint("[::1]:2379").unwrap(),
            "http://[::1]:2379"
        );
        for bad in ["", "h", "h:0", "h:99999", "ftp://h:1", "http://h:1/x", ":1"] {
            assert!(
                matches!(normalize_endpoint(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
