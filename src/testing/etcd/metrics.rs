//! Prometheus metrics, over a minimal HTTP/1.1 client (also used for
//! `/health` and the JSON gateway).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Etcd;
use crate::testing::HarnessError;

/// Deadline of one `/metrics` scrape.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest HTTP response the harness reads.
const MAX_HTTP_RESPONSE: u64 = 32 * 1024 * 1024;

impl Etcd {
    /// Scrapes `GET /metrics` of member `i` and returns the value of metric
    /// `name` (e.g. `"etcd_server_proposals_committed_total"`): the sample on
    /// the line starting with `name` followed by a space or `{`, summed over
    /// all label sets if there are several. A name may select label sets:
    /// `grpc_server_started_total{grpc_method="LeaseKeepAlive"}` sums only
    /// the samples whose labels include every one given.
    ///
    /// With client TLS the plain-HTTP metrics listener is scraped instead of
    /// the client port.
    ///
    /// # Errors
    ///
    /// If the member cannot be reached within 5 s, answers with a status other
    /// than 200, or exposes no sample of `name`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub async fn metric(&self, i: usize, name: &str) -> Result<f64, HarnessError> {
        let member = self.member(i);
        let addr = self.metrics_addr(i);
        let (status, body) = http_request(addr, "GET", "/metrics", None, METRICS_TIMEOUT)
            .await
            .map_err(|e| {
                HarnessError::new(format!(
                    "scraping /metrics of etcd member {}: {e}",
                    member.name
                ))
            })?;
        if status != 200 {
            return Err(HarnessError::new(format!(
                "scraping /metrics of etcd member {}: HTTP status {status}",
                member.name
            )));
        }
        parse_metric(&body, name).ok_or_else(|| {
            HarnessError::new(format!(
                "metric `{name}` not found in /metrics of etcd member {}",
                member.name
            ))
        })
    }
}

/// One HTTP/1.1 request (`Connection: close`) to `addr`; returns the status
/// code and the body (de-chunked, lossily decoded as UTF-8).
pub(super) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Accept: */*\r\nUser-Agent: locker-testing\r\n"
        );
        if let Some(body) = body {
            let _ = write!(
                request,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or(""));
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_HTTP_RESPONSE)
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        parse_http_response(&response)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{method} http://{addr}{path} timed out after {timeout:?}"))?
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_http_response(raw: &[u8]) -> Result<(u16, String), String> {
    let head_end = find_bytes(raw, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "malformed HTTP response ({} bytes, no end of headers)",
            raw.len()
        )
    })?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed HTTP status line {status_line:?}"))?;
    let mut chunked = false;
    let mut content_length = None;
    for line in lines {
        if let Some((key, value)) = line.split_once(':') {
            let key = key.trim();
            if key.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if key.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(len) = content_length {
        rest.get(..len)
            .ok_or_else(|| format!("truncated HTTP body ({} of {len} bytes)", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end =
            find_bytes(data, b"\r\n").ok_or("truncated chunked body (no chunk size line)")?;
        let size_line = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        data = data[size..]
            .strip_prefix(b"\r\n")
            .ok_or("chunk not followed by CRLF")?;
    }
}

/// Value of `"key": "value"` (or `"key": 123`) found by plain string search.
pub(super) fn json_field(body: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\"");
    let mut from = 0;
    while let Some(pos) = body[from..].find(&pattern) {
        from += pos + pattern.len();
        let Some(after) = body[from..].trim_start().strip_prefix(':') else {
            continue;
        };
        let after = after.trim_start();
        if let Some(quoted) = after.strip_prefix('"') {
            return quoted.find('"').map(|end| quoted[..end].to_owned());
        }
        let end = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if end > 0 {
            return Some(after[..end].to_owned());
        }
    }
    None
}

/// Sum of the samples of metric `name` in a Prometheus text exposition.
fn parse_metric(body: &str, name: &str) -> Option<f64> {
    let (name, wanted) = match name.split_once('{') {
        Some((base, labels)) => (base, labels.trim_end_matches('}')),
        None => (name, ""),
    };
    let wanted: Vec<&str> = wanted.split(',').filter(|l| !l.is_empty()).collect();
    let mut sum: Option<f64> = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value_part = if let Some(labels_and_value) = rest.strip_prefix('{') {
            match labels_and_value.rfind('}') {
                Some(end) => {
                    let labels: Vec<&str> = labels_and_value[..end].split(',').collect();
                    if !wanted.iter().all(|w| labels.contains(w)) {
                        continue;
                    }
                    &labels_and_value[end + 1..]
                }
                None => continue,
            }
        } else if !wanted.is_empty() {
            continue;
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            continue; // another metric whose name starts with `name`
        };
        if let Some(value) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            sum = Some(sum.unwrap_or(0.0) + value);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics() {
        let body = "# HELP x_total help\n# TYPE x_total counter\nx_total 5\nx_total_other 7\n\
                    y{a=\"1\"} 2\ny{a=\"}\"} 3 1700000000\nz 1e3\n";
        assert_eq!(parse_metric(body, "x_total"), Some(5.0));
        assert_eq!(parse_metric(body, "y"), Some(5.0));
        assert_eq!(parse_metric(body, "z"), Some(1000.0));
        assert_eq!(parse_metric(body, "w"), None);
        let grpc = "g{m=\"Watch\",t=\"bidi\"} 2\ng{m=\"LeaseKeepAlive\",t=\"bidi\"} 1\ng 9\n";
        assert_eq!(parse_metric(grpc, "g{m=\"LeaseKeepAlive\"}"), Some(1.0));
        assert_eq!(parse_metric(grpc, "g{t=\"bidi\"}"), Some(3.0));
        assert_eq!(parse_metric(grpc, "g{m=\"Range\"}"), None);
    }

    #[test]
    fn parses_json_fields() {
        let body =
            r#"{"header":{"cluster_id":"1","member_id":"42","revision":"1"},"leader":"42","n": 7}"#;
        assert_eq!(json_field(body, "member_id").as_deref(), Some("42"));
        assert_eq!(json_field(body, "leader").as_deref(), Some("42"));
        assert_eq!(json_field(body, "n").as_deref(), Some("7"));
        assert_eq!(json_field(body, "missing"), None);
    }

    #[test]
    fn parses_http_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_http_response(plain), Ok((200, "hello".to_owned())));
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                        3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n";
        assert_eq!(
            parse_http_response(chunked),
            Ok((503, "abcdefg".to_owned()))
        );
        assert!(parse_http_response(b"garbage").is_err());
    }
}
