//! The ruler's errors, mapped to HTTP status in one place ([`RulerError::status`]).

use crate::rulefmt::RuleFmtErrors;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RulerError {
    /// The rule group or request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(#[from] RuleFmtErrors),
    /// A per-tenant limit refuses the group (400, as Cortex).
    #[error("{0}")]
    Limit(String),
    #[error("no rule groups found")]
    NoRules,
    #[error("{0}")]
    NotFound(String),
    /// The `local` backend is maintained outside Cortex.
    #[error("the configured rule storage backend is read-only")]
    ReadOnlyStore,
    #[error("rule storage: {0}")]
    Storage(String),
}

impl RulerError {
    pub fn status(&self) -> u16 {
        match self {
            RulerError::BadRequest(_) | RulerError::Invalid(_) | RulerError::Limit(_) => 400,
            RulerError::NoRules | RulerError::NotFound(_) => 404,
            RulerError::ReadOnlyStore => 405,
            RulerError::Storage(_) => 500,
        }
    }
}

impl From<RulerError> for server::HttpError {
    fn from(e: RulerError) -> Self {
        server::HttpError::new(e.status(), e.to_string())
    }
}
