//! The devdb CLI.
