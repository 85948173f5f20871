//! placeholder
pub mod machine;
pub mod policy;
