//! The harness: [`devdb_core::harness`] (behind the `test-support` feature, shared with the
//! dashboard's tests), serving the API alone.

pub use devdb_core::harness::*;
