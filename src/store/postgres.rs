//! stub (replaced by the real implementation)
#![allow(missing_docs)]
pub struct PostgresStore;
impl PostgresStore { pub async fn open(_u: &str) -> super::StoreResult<std::sync::Arc<dyn super::Store>> { Err(super::StoreError::UnsupportedUrl("stub".into())) } }
