//! The proxy's integration tests, one binary. `inproc`: the proxy's connection code in the test's
//! runtime over in-memory streams, with fake backends and a fake controller (refusals, routing,
//! admission, wakes: milliseconds each). The other modules: the whole proxy in front of real
//! PostgreSQL servers, for what needs them (relay transparency, cancels, SCRAM through, a real
//! wake, the process's life). `common` holds both harnesses and what they share.

mod cancel;
mod common;
mod inproc;
mod lifecycle;
mod routing;
mod transparency;
mod wake;
