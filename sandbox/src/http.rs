//! A minimal HTTP/1.1 client for raw calls to the emulators (readiness probes, moto's admin API,
//! raw DynamoDB Streams calls).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{Result, SandboxError};

/// An `Authorization` header dynoxide, moto and DynamoDB Local accept as "signed": they check that
/// the material is present, never the signature. The credential scope matters to DynamoDB Local
/// (and moto), which pick the database by access key and region from it: it names the access key
/// of [`crate::test_credentials`] and `region`.
pub(crate) fn fake_authorization(region: &str, date: &str) -> String {
    let day = date.get(..8).unwrap_or("20240101");
    format!(
        "AWS4-HMAC-SHA256 Credential=test/{day}/{region}/dynamodb/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
         Signature=0000000000000000000000000000000000000000000000000000000000000000"
    )
}

/// A reusable raw HTTP client.
#[derive(Clone, Debug)]
pub(crate) struct RawClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A raw response.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub body: Bytes,
}

impl RawClient {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        RawClient { client }
    }

    /// Sends one request and reads the whole response, within `timeout`.
    pub(crate) async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<RawResponse> {
        let mut builder = hyper::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| SandboxError::Http {
                url: url.to_string(),
                detail: format!("building the request: {e}"),
            })?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| SandboxError::Http {
                    url: url.to_string(),
                    detail: error_chain(&e),
                })?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| SandboxError::Http {
                    url: url.to_string(),
                    detail: format!("reading the body: {}", error_chain(&e)),
                })?
                .to_bytes();
            Ok(RawResponse { status, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(SandboxError::Http {
                url: url.to_string(),
                detail: format!("no answer within {timeout:?}"),
            }),
        }
    }

    /// A DynamoDB-style JSON 1.0 POST (`X-Amz-Target`, fake SigV4 material for `region`).
    pub(crate) async fn amz_json(
        &self,
        endpoint: &str,
        region: &str,
        target: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<RawResponse> {
        let date = amz_date();
        let authorization = fake_authorization(region, &date);
        self.send(
            hyper::Method::POST,
            &format!("{}/", endpoint.trim_end_matches('/')),
            &[
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", target),
                ("x-amz-date", &date),
                ("authorization", &authorization),
            ],
            body,
            timeout,
        )
        .await
    }
}

/// The current UTC time as an `X-Amz-Date` value (`YYYYMMDDTHHMMSSZ`).
pub(crate) fn amz_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An error and its sources on one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Extracts `(__type, message)` from an AWS JSON error body.
pub(crate) fn aws_json_error(body: &[u8]) -> (String, String) {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let error_type = value
        .get("__type")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    let message = value
        .get("message")
        .or_else(|| value.get("Message"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    (error_type, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(amz_date().len(), 16);
    }

    #[test]
    fn json_errors() {
        let (t, m) = aws_json_error(br#"{"__type":"a#B","message":"m"}"#);
        assert_eq!((t.as_str(), m.as_str()), ("a#B", "m"));
        let (t, _) = aws_json_error(b"not json");
        assert_eq!(t, "unknown");
    }
}
