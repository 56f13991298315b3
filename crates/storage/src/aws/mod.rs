//! Shared AWS plumbing: `-dynamodb.url` / `-s3.url` parsing and SDK config loading.

use aws_config::BehaviorVersion;

use crate::StoreError;

/// What a Cortex AWS URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsUrl {
    pub region: String,
    /// A custom endpoint (local DynamoDB/S3 stand-ins); `None` = real AWS.
    pub endpoint: Option<String>,
    pub key: Option<String>,
    pub secret: Option<String>,
    /// The URL path without its leading `/` (the S3 bucket).
    pub path: String,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://[key:secret@]host[:port][/path]`. `http(s)` → that endpoint; `dynamodb`/`s3` with a
/// host that has a port or a dot → an http endpoint; otherwise the host is the AWS region.
pub fn parse_url(url: &str) -> Result<AwsUrl, StoreError> {
    let bad = |why: &str| StoreError::bad_request(format!("invalid AWS URL {url:?}: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme"))?;
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, p.trim_end_matches('/').to_string()),
        None => (rest, String::new()),
    };
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let (key, secret) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((k, s)) => (Some(percent_decode(k)), Some(percent_decode(s))),
        None => (None, None),
    };
    let default_region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_string());
    let (region, endpoint) = match scheme {
        "http" | "https" => (default_region, Some(format!("{scheme}://{host}"))),
        "dynamodb" | "s3" if host.contains(':') || host.contains('.') => {
            (default_region, Some(format!("http://{host}")))
        }
        "dynamodb" | "s3" => (host.to_string(), None),
        "inmemory" => return Err(bad("inmemory is not supported; use the embedded store")),
        other => return Err(bad(&format!("unsupported scheme {other:?}"))),
    };
    Ok(AwsUrl {
        region,
        endpoint,
        key,
        secret,
        path,
    })
}

/// SDK config for a parsed URL. Retries are ours (backoff per spec §4.7), so the SDK's are off.
pub async fn sdk_config(u: &AwsUrl) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(u.region.clone()))
        .retry_config(aws_config::retry::RetryConfig::disabled());
    if let Some(ep) = &u.endpoint {
        loader = loader.endpoint_url(ep.clone());
    }
    if let (Some(k), Some(s)) = (&u.key, &u.secret) {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            k.clone(),
            s.clone(),
            None,
            None,
            "cortex-url",
        ));
    }
    loader.load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("dynamodb://user:pa%2Fss@127.0.0.1:8000/").unwrap();
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!((u.key.as_deref(), u.secret.as_deref()), (Some("user"), Some("pa/ss")));
        let u = parse_url("dynamodb://k:s@eu-west-1").unwrap();
        assert_eq!((u.region.as_str(), u.endpoint.clone()), ("eu-west-1", None));
        let u = parse_url("http://S3RVER:S3RVER@localhost:4569/cortex-chunks").unwrap();
        assert_eq!(u.endpoint.as_deref(), Some("http://localhost:4569"));
        assert_eq!(u.path, "cortex-chunks");
        let u = parse_url("s3://k:s@us-east-2/bucket").unwrap();
        assert_eq!((u.region.as_str(), u.path.as_str()), ("us-east-2", "bucket"));
        assert!(parse_url("nope").is_err());
        assert!(parse_url("ftp://x").is_err());
    }
}
