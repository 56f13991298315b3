//! Config values that must not be shown: [`Secret`] (a token, a password,
//! a secret key) and [`SecretUrl`] (a URL that may carry `user:password@`),
//! as Cortex's `flagext.Secret` and `flagext.URLValue`.
//!
//! Both keep their real value for the program (and for the config loader,
//! which round-trips the tree through serde). Only while [`redacted`] runs —
//! which is how [`crate::config::to_yaml`] renders `/config` — do they
//! serialize masked: a secret as `********`, a URL with its password as
//! `********`. Their `Debug` output is always masked, so a config logged
//! with `{:?}` does not leak them either.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a masked value reads as (Cortex's).
pub const MASK: &str = "********";

thread_local! {
    static REDACTING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every [`Secret`] and [`SecretUrl`] serializing masked.
pub fn redacted<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REDACTING.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(REDACTING.with(|r| r.replace(true)));
    f()
}

fn redacting() -> bool {
    REDACTING.with(|r| r.get())
}

/// A token, password or secret key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            write!(f, "{MASK:?}")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if redacting() && !self.0.is_empty() {
            s.serialize_str(MASK)
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A URL whose user-info password (`scheme://user:password@host/…`) is secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> Self {
        SecretUrl(value.into())
    }

    /// The real URL, password included, for the client that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The URL with its password (if any) replaced by [`MASK`].
    pub fn masked(&self) -> String {
        mask_url_password(&self.0)
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        SecretUrl(s.to_string())
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        SecretUrl(s)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if redacting() {
            s.serialize_str(&self.masked())
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}

/// `s3://key:secret@region/bucket` → `s3://key:********@region/bucket`.
/// The user-info is what precedes the last `@` of the authority (the part
/// after `scheme://` up to the first `/`, `?` or `#`); the password is what
/// follows its first `:`. A URL without a password is returned unchanged.
fn mask_url_password(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_string();
    };
    format!("{}{MASK}{}", &url[..start + colon + 1], &url[start + at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct Cfg {
        token: Secret,
        empty: Secret,
        url: SecretUrl,
    }

    #[test]
    fn urls_lose_only_their_password() {
        let cases = [
            (
                "s3://AKIA:wJalr%2Fsecret@us-east-1/bucket",
                "s3://AKIA:********@us-east-1/bucket",
            ),
            (
                "dynamodb://key:p@ss:w0rd@eu-west-1",
                "dynamodb://key:********@eu-west-1",
            ),
            (
                "http://user:pw@localhost:4569/b?x=a@b",
                "http://user:********@localhost:4569/b?x=a@b",
            ),
            ("http://user@localhost:4569", "http://user@localhost:4569"),
            ("http://localhost:4569/a:b@c", "http://localhost:4569/a:b@c"),
            ("inmemory:///", "inmemory:///"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(mask_url_password(url), want, "{url}");
        }
    }

    #[test]
    fn masked_only_while_redacting_and_always_in_debug() {
        let c = Cfg {
            token: "acl-t0ken".into(),
            empty: Secret::default(),
            url: "s3://key:supersecret@region/bucket".into(),
        };
        // The loader's round trip keeps the real values.
        let plain = serde_json::to_value(&c).unwrap();
        assert_eq!(serde_json::from_value::<Cfg>(plain.clone()).unwrap(), c);
        assert_eq!(plain["token"], "acl-t0ken");

        let shown = redacted(|| serde_json::to_value(&c).unwrap());
        assert_eq!(shown["token"], MASK);
        assert_eq!(shown["empty"], "", "an unset secret shows as unset");
        assert_eq!(shown["url"], "s3://key:********@region/bucket");
        // The mode ends with the call.
        assert_eq!(serde_json::to_value(&c).unwrap()["token"], "acl-t0ken");

        let debug = format!("{c:?}");
        assert!(
            !debug.contains("acl-t0ken") && !debug.contains("supersecret"),
            "{debug}"
        );
        assert_eq!(c.token.expose(), "acl-t0ken");
        assert_eq!(c.url.expose(), "s3://key:supersecret@region/bucket");
    }
}
