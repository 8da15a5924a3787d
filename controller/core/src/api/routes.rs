//! `GET /v1/routes` (the table now) and `GET /v1/routes/watch` (newline-delimited JSON: the
//! table now, then again after every change, and every 30 s as a heartbeat).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use devdb_shared::RouteTable;

use super::{ApiError, Shared};
use crate::auth::Caller;
use crate::runtime::Platform;
#[allow(unused_imports)]
use devdb_shared::api::ErrorBody;

const HEARTBEAT: Duration = Duration::from_secs(30);

/// Only admins (the proxies' token) read the routing table: it names every instance.
fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::Owner(_) => Err(ApiError::Forbidden("the routing table is for proxies (admin tokens)".into())),
    }
}

#[utoipa::path(
    get, path = "/v1/routes", tag = "routes", responses((status = 200, body = RouteTable), (status = 403, body = ErrorBody))
)]
pub async fn snapshot<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
) -> Result<Json<RouteTable>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(state.routes.current()))
}

#[utoipa::path(
    get, path = "/v1/routes/watch", tag = "routes", responses((status = 200, description = "application/x-ndjson: one RouteTable per line, on every change and every 30 s", body = RouteTable))
)]
pub async fn watch<P: Platform>(axum::extract::State(state): Shared<P>, caller: Caller) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let mut changes = state.routes.subscribe();
    changes.mark_changed();
    let shutdown = state.shutdown.clone();
    let lines = futures_util::stream::unfold(changes, move |mut changes| {
        let shutdown = shutdown.clone();
        async move {
            // The stream ends when the controller stops, so proxies resubscribe elsewhere.
            let next = shutdown.run_until_cancelled(tokio::time::timeout(HEARTBEAT, changes.changed())).await;
            match next {
                None | Some(Ok(Err(_))) => return None,
                Some(Ok(Ok(()))) | Some(Err(_)) => {}
            }
            let mut line = serde_json::to_vec(&*changes.borrow_and_update()).unwrap_or_default();
            line.push(b'\n');
            Some((Ok::<_, Infallible>(Bytes::from(line)), changes))
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}
