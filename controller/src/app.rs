//! The controller's HTTP application, composed here: the REST API (`devdb-core`), the dashboard
//! beside it (`devdb-dashboard`, which calls the API in-process), and what every request passes
//! around both (the core's origin guard, request span and release header).

use std::sync::Arc;

use axum::Router;
use devdb_core::api::AppState;
use devdb_core::runtime::Platform;

/// Everything the controller answers over HTTP.
pub fn router<P: Platform>(state: Arc<AppState<P>>) -> Router {
    let api = devdb_core::api::router(state.clone());
    let dashboard = devdb_dashboard::router(api.clone(), state.config.tokens.clone());
    devdb_core::app::with_request_layers(api.merge(dashboard), state)
}

#[cfg(test)]
mod tests {
    use devdb_core::fake::{FakePlatform, FakeRuntime};
    use devdb_core::harness::{ADMIN, Core};

    /// The binary answers with the API and the dashboard beside it (whose fallback answers an
    /// unknown API path with the API's JSON), every answer behind the request layers.
    #[tokio::test]
    async fn the_dashboard_is_served_beside_the_api_behind_what_every_request_passes() {
        let core = Core::serving(FakeRuntime::default(), |_| {}, super::router::<FakePlatform>);
        assert_eq!(core.call(Some(ADMIN), "GET", "/v1/databases", None).await.0.as_u16(), 200);
        assert_eq!(core.call(None, "GET", "/", None).await.0.as_u16(), 303, "to the dashboard");
        let (status, missing) = core.call(Some(ADMIN), "GET", "/v1/no-such-thing", None).await;
        assert_eq!((status.as_u16(), missing["error"]["code"].as_str()), (404, Some("not_found")), "{missing}");
        for path in ["/v1/databases", "/ui/databases", "/ui/assets/dashboard.css"] {
            assert!(core.release_header(path).await.is_some(), "X-Release on {path}");
        }
    }
}
