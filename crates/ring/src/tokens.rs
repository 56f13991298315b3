//! Ring tokens: generation and the tokens file (spec §2.2).

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::RingError;

/// `n` random tokens, none of them in `taken` nor repeated, sorted.
pub fn generate_tokens(n: usize, taken: &HashSet<u32>) -> Vec<u32> {
    let mut fresh = HashSet::with_capacity(n);
    while fresh.len() < n {
        let candidate: u32 = rand::random();
        if !taken.contains(&candidate) {
            fresh.insert(candidate);
        }
    }
    let mut tokens: Vec<u32> = fresh.into_iter().collect();
    tokens.sort_unstable();
    tokens
}

/// The tokens file: `{"tokens":[…]}`, as Cortex writes it.
#[derive(Debug, Serialize, Deserialize)]
struct TokensFile {
    tokens: Vec<u32>,
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> RingError {
    RingError::TokensFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads a tokens file; a missing file is `Ok(None)`.
pub fn load_tokens_file(path: &Path) -> Result<Option<Vec<u32>>, RingError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, e)),
    };
    let parsed: TokensFile = serde_json::from_slice(&data).map_err(|e| file_error(path, e))?;
    let mut tokens = parsed.tokens;
    tokens.sort_unstable();
    tokens.dedup();
    Ok(Some(tokens))
}

/// Writes a tokens file atomically: a reader sees the old or the new file, never half of one.
pub fn store_tokens_file(path: &Path, tokens: &[u32]) -> Result<(), RingError> {
    let body = serde_json::to_vec(&TokensFile {
        tokens: tokens.to_vec(),
    })
    .map_err(|e| file_error(path, e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, body).map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_sorted_unique_and_avoid_taken() {
        let taken: HashSet<u32> = generate_tokens(1000, &HashSet::new()).into_iter().collect();
        let fresh = generate_tokens(512, &taken);
        assert_eq!(fresh.len(), 512);
        assert!(fresh.windows(2).all(|w| w[0] < w[1]));
        assert!(fresh.iter().all(|t| !taken.contains(t)));
    }

    #[test]
    fn tokens_file_round_trip_and_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        assert!(load_tokens_file(&path).unwrap().is_none());
        store_tokens_file(&path, &[3, 1, 2]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"{"tokens":[3,1,2]}"#);
        assert_eq!(load_tokens_file(&path).unwrap(), Some(vec![1, 2, 3]));
        assert!(!dir.path().join("tokens.tmp").exists());
        std::fs::write(&path, "not json").unwrap();
        let err = load_tokens_file(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("tokens file {}", path.display())), "{err}");
    }
}
