//! Tenant (org) IDs: where they come from and what they may contain.

/// HTTP header carrying the tenant.
pub const ORG_ID_HEADER: &str = "X-Scope-OrgID";
/// gRPC metadata key carrying the tenant (lower case).
pub const ORG_ID_METADATA: &str = "x-scope-orgid";
/// Tenant used for every request when auth is disabled.
pub const DEFAULT_TENANT: &str = "fake";
/// Longest tenant ID accepted.
pub const MAX_TENANT_ID_LENGTH: usize = 150;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("no org id")]
    Missing,
    #[error("tenant ID is too long: max {MAX_TENANT_ID_LENGTH} characters")]
    TooLong,
    #[error("tenant ID is '.' or '..'")]
    Unsafe,
    #[error("tenant ID '{id}' contains unsupported character '{ch}'")]
    BadCharacter { id: String, ch: char },
}

/// Validates a tenant ID as Cortex v1.10 does: `[A-Za-z0-9!-_.*'()]`, ≤150
/// characters, not `.` or `..` (object-store path safety).
pub fn validate(id: &str) -> Result<(), TenantError> {
    if id.is_empty() {
        return Err(TenantError::Missing);
    }
    if id.len() > MAX_TENANT_ID_LENGTH {
        return Err(TenantError::TooLong);
    }
    if id == "." || id == ".." {
        return Err(TenantError::Unsafe);
    }
    if let Some(ch) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')))
    {
        return Err(TenantError::BadCharacter { id: id.to_string(), ch });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_rules() {
        assert!(validate("team-a_1.prod").is_ok());
        assert_eq!(validate(""), Err(TenantError::Missing));
        assert_eq!(validate(".."), Err(TenantError::Unsafe));
        assert!(matches!(
            validate("a/b"),
            Err(TenantError::BadCharacter { ch: '/', .. })
        ));
        assert_eq!(validate(&"x".repeat(151)), Err(TenantError::TooLong));
    }
}
