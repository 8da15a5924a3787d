//! Tests on the in-process harness (`common::inproc`): what the proxy decides before or without
//! a real server (refusals, routing, admission limits, wakes), against fake backends and a fake
//! controller, in milliseconds each; timeouts under test run on paused time.

mod admission;
mod refusals;
mod routing;
mod wake;
