//! The error shape every HTTP endpoint of the lab returns.
//!
//! Internals never leak: a database error becomes a 500 with a generic
//! message (and is logged), while client mistakes become a 4xx whose JSON
//! names the field and says what was wrong.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A JSON error response: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// `Retry-After` in seconds, for 429 and 503 responses.
    pub retry_after_secs: Option<u64>,
}

/// Every error's body (the OpenAPI documents' `ErrorBody`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable code, a message for people, the field at fault.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// e.g. `invalid_body`, `overloaded`, `idempotency_key_reused`.
    pub code: String,
    pub message: String,
    /// The JSON field, header or query parameter at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    /// 422: a well-formed body whose `field` has an unacceptable value.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
        e.field = Some(field.into());
        e
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 503 + Retry-After: the service is alive but refuses work for now.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after_secs = Some(retry_after_secs);
        e
    }

    /// 500 with a generic message; the cause is logged, never returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            _ => "malformed_json",
        };
        let mut err = Self::new(status, code, rejection.body_text());
        err.field = field_from_serde_message(&rejection.body_text());
        err
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

/// serde reports "missing field `amount_cents`" or "... at line 1 column 5" and
/// sometimes a path prefix (`amount_cents: invalid type`); pull the field out so
/// clients get it as data, not only prose.
fn field_from_serde_message(msg: &str) -> Option<String> {
    if let Some(start) = msg.find('`') {
        let rest = &msg[start + 1..];
        if msg[..start].contains("field") {
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_string());
            }
        }
    }
    // "Failed to deserialize the JSON body into the target type: amount_cents: invalid type"
    let tail = msg.rsplit_once("target type: ").map(|(_, t)| t)?;
    let (path, _) = tail.split_once(": ")?;
    (!path.contains(' ')).then(|| path.to_string())
}

/// `axum::Json` whose rejections are [`ApiError`]s (JSON, with the field).
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_is_extracted_from_serde_messages() {
        assert_eq!(
            field_from_serde_message("Failed to deserialize the JSON body into the target type: missing field `amount_cents` at line 1 column 2").as_deref(),
            Some("amount_cents")
        );
        assert_eq!(
            field_from_serde_message("Failed to deserialize the JSON body into the target type: currency: invalid type: integer `3`, expected a string at line 1 column 14").as_deref(),
            Some("currency")
        );
        assert_eq!(field_from_serde_message("EOF while parsing"), None);
    }
}
