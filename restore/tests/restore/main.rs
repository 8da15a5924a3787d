//! The restore crate against real PostgreSQL, one binary: hostile dumps, the source policy, and
//! the database image's entrypoints as the image runs them.

mod image;
mod masking;
mod restore;
