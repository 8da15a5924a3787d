//! `GET /v1/routes` (the table now) and `GET /v1/routes/watch` (newline-delimited JSON: the
//! table now, then again after every change, and every 30 s as a heartbeat). With
//! `?changes=true` (what proxies ask for) every line after the first says only what changed
//! ([`devdb_shared::RouteChanges`]): at a thousand databases the whole table is 78 KB.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use devdb_shared::{RouteTable, RouteUpdate};

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
        Caller::Owner(_) => Err(ApiError::forbidden("admin_only", "the routing table is for proxies (admin tokens)")),
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

/// `GET /v1/routes/watch` query.
#[derive(Debug, Default, serde::Deserialize)]
pub struct WatchQuery {
    /// After the first whole table, send changes only.
    #[serde(default)]
    changes: bool,
}

#[utoipa::path(
    get, path = "/v1/routes/watch", tag = "routes", params(("changes" = Option<bool>, Query, description = "After the first whole table, send only what changed (RouteChanges)")),
    responses((status = 200, description = "application/x-ndjson: one RouteTable per line (or, with changes=true, the table then RouteChanges), on every change and every 30 s", body = RouteTable))
)]
pub async fn watch<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let Query(query) = query?;
    let mut changes = state.routes.subscribe();
    changes.mark_changed();
    let shutdown = state.shutdown.clone();
    // What this subscriber was last sent, when it asked for changes.
    let sent: Option<RouteTable> = None;
    let lines = futures_util::stream::unfold((changes, sent), move |(mut changes, sent)| {
        let shutdown = shutdown.clone();
        async move {
            // The stream ends when the controller stops, so proxies resubscribe elsewhere.
            let next = shutdown.run_until_cancelled(tokio::time::timeout(HEARTBEAT, changes.changed())).await;
            match next {
                None | Some(Ok(Err(_))) => return None,
                Some(Ok(Ok(()))) | Some(Err(_)) => {}
            }
            let table = changes.borrow_and_update().clone();
            let (update, sent) = match sent {
                Some(sent) if query.changes => (RouteUpdate::Changes(sent.changes_to(&table)), Some(table)),
                _ if query.changes => (RouteUpdate::Table(table.clone()), Some(table)),
                _ => (RouteUpdate::Table(table), None),
            };
            let mut line = serde_json::to_vec(&update).unwrap_or_default();
            line.push(b'\n');
            Some((Ok::<_, Infallible>(Bytes::from(line)), (changes, sent)))
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}
