//! Object clients: where chunk objects live (spec §4.6).

pub mod fs;
#[cfg(feature = "aws")]
pub mod s3;

use bytes::Bytes;

use crate::StoreError;

#[async_trait::async_trait]
pub trait ObjectClient: Send + Sync {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    /// `Ok(None)` when the object does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
}
