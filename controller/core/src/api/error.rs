//! API errors: a status, a stable `code` and a message for people, as
//! `{ "error": { "code", "message" } }`. Internal failures are logged and shown generically.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use devdb_shared::api::{ErrorBody, ErrorDetail};

use crate::store::StoreError;

/// Every way an API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// 409, with a code saying which conflict ([`ApiError::conflict`]).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("missing or invalid API token: send Authorization: Bearer <token>")]
    Unauthorized,
    /// 403, with a code saying why ([`ApiError::forbidden`]).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A conflict with the object's state: `already_exists`, `name_not_available`,
    /// `being_deleted`, `database_failed`, `project_not_ready`, `restoring`, `has_databases`,
    /// `no_snapshot`, `no_backup`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }

    /// A refusal whatever the object's state: `quota_exceeded`, `admin_only`, `not_yours`,
    /// `cross_site`, `not_loopback`.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden { code, message: message.into() }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::Failed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "failed"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let body = ErrorBody { error: ErrorDetail { code: code.into(), message: self.to_string() } };
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists { .. } => Self::conflict("already_exists", e.to_string()),
            StoreError::NotFound { .. } => Self::NotFound(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::state::database::Refusal> for ApiError {
    fn from(refusal: crate::state::database::Refusal) -> Self {
        Self::conflict(refusal.code(), refusal.to_string())
    }
}

impl From<crate::state::project::Refusal> for ApiError {
    fn from(refusal: crate::state::project::Refusal) -> Self {
        Self::conflict(refusal.code(), refusal.to_string())
    }
}

impl From<crate::state::project::CloneRefusal> for ApiError {
    fn from(refusal: crate::state::project::CloneRefusal) -> Self {
        Self::conflict(refusal.code(), refusal.to_string())
    }
}

impl<R: Into<ApiError>> From<crate::state::TransitionError<R>> for ApiError {
    fn from(e: crate::state::TransitionError<R>) -> Self {
        match e {
            crate::state::TransitionError::Refused(refusal) => refusal.into(),
            crate::state::TransitionError::Store(e) => e.into(),
        }
    }
}

impl From<crate::backup_settings::BackupSettingsError> for ApiError {
    fn from(e: crate::backup_settings::BackupSettingsError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::BadRequest(format!("invalid request body: {}", e.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::BadRequest(format!("invalid query: {}", e.body_text()))
    }
}
