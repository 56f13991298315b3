use std::fmt;

use regex::Regex;

/// The four PromQL label matcher kinds (numbering as `cortex.MatchType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchType {
    Equal = 0,
    NotEqual = 1,
    RegexMatch = 2,
    RegexNoMatch = 3,
}

#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("invalid regular expression {pattern:?}: {source}")]
    BadRegex {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("unknown matcher type {0}")]
    UnknownType(i32),
}

/// A label matcher. Regexes are fully anchored, as in Prometheus.
#[derive(Clone)]
pub struct Matcher {
    pub kind: MatchType,
    pub name: String,
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    pub fn new(kind: MatchType, name: impl Into<String>, value: impl Into<String>) -> Result<Self, MatcherError> {
        let value = value.into();
        let re = match kind {
            MatchType::RegexMatch | MatchType::RegexNoMatch => Some(
                // (?s): `.` matches newlines, as Go's RE2 flags Prometheus sets.
                Regex::new(&format!("^(?s:{value})$")).map_err(|source| MatcherError::BadRegex {
                    pattern: value.clone(),
                    source,
                })?,
            ),
            _ => None,
        };
        Ok(Matcher {
            kind,
            name: name.into(),
            value,
            re,
        })
    }

    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            kind: MatchType::Equal,
            name: name.into(),
            value: value.into(),
            re: None,
        }
    }

    /// From the wire enum number.
    pub fn from_i32(kind: i32, name: impl Into<String>, value: impl Into<String>) -> Result<Self, MatcherError> {
        let kind = match kind {
            0 => MatchType::Equal,
            1 => MatchType::NotEqual,
            2 => MatchType::RegexMatch,
            3 => MatchType::RegexNoMatch,
            k => return Err(MatcherError::UnknownType(k)),
        };
        Matcher::new(kind, name, value)
    }

    /// Does a label value (or "" for an absent label) match?
    pub fn matches(&self, v: &str) -> bool {
        match self.kind {
            MatchType::Equal => v == self.value,
            MatchType::NotEqual => v != self.value,
            MatchType::RegexMatch => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchType::RegexNoMatch => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// True if the matcher selects series that lack the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// Does the whole label set satisfy this matcher?
    pub fn matches_labels(&self, labels: &crate::Labels) -> bool {
        self.matches(labels.get(&self.name))
    }
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind && self.name == o.name && self.value == o.value
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.kind {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::RegexMatch => "=~",
            MatchType::RegexNoMatch => "!~",
        };
        write!(f, "{}{}{:?}", self.name, op, self.value)
    }
}

/// True if every matcher accepts the label set.
pub fn matches_all(matchers: &[Matcher], labels: &crate::Labels) -> bool {
    matchers.iter().all(|m| m.matches_labels(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Labels;

    #[test]
    fn four_kinds_and_anchoring() {
        let l = Labels::from_pairs([("job", "api-server")]);
        assert!(Matcher::new(MatchType::Equal, "job", "api-server")
            .unwrap()
            .matches_labels(&l));
        assert!(Matcher::new(MatchType::NotEqual, "job", "x")
            .unwrap()
            .matches_labels(&l));
        assert!(Matcher::new(MatchType::RegexMatch, "job", "api.*")
            .unwrap()
            .matches_labels(&l));
        // Anchored: a partial match is no match.
        assert!(!Matcher::new(MatchType::RegexMatch, "job", "api")
            .unwrap()
            .matches_labels(&l));
        assert!(Matcher::new(MatchType::RegexNoMatch, "job", "api")
            .unwrap()
            .matches_labels(&l));
        // Absent label reads as "".
        assert!(Matcher::new(MatchType::Equal, "env", "").unwrap().matches_labels(&l));
        assert!(Matcher::new(MatchType::RegexMatch, "env", ".*")
            .unwrap()
            .matches_empty());
    }

    #[test]
    fn bad_regex_is_an_error() {
        assert!(matches!(
            Matcher::new(MatchType::RegexMatch, "a", "("),
            Err(MatcherError::BadRegex { .. })
        ));
        assert!(Matcher::from_i32(9, "a", "b").is_err());
    }
}
