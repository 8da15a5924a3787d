//! The proxy's integration tests, one binary: real PostgreSQL servers, the proxy in-process
//! with a generated CA, and real clients (`common` is the harness).

mod cancel;
mod common;
mod errors;
mod lifecycle;
mod routing;
mod transparency;
mod wake;
