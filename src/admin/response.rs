//! The admin endpoint's response bodies and the JSON shapes every route shares.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use poolvisor_actors::ControlError;

/// Every admin response: a whole body, or a stream (`/events`).
pub(super) type AdminResponse = Response<BoxBody<Bytes, Infallible>>;

pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> AdminResponse {
    respond(status, "application/json", value.to_string())
}

/// `{"error": message}` with `status`.
pub(super) fn error(status: StatusCode, message: impl std::fmt::Display) -> AdminResponse {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

/// A request turned down: the status and what to tell the caller. Messages never hold
/// a secret: they name pools, fields and numbers only.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, message: impl std::fmt::Display) -> Refusal {
        Refusal {
            status,
            message: message.to_string(),
        }
    }

    pub(super) fn into_response(self) -> AdminResponse {
        error(self.status, self.message)
    }
}

impl From<ControlError> for Refusal {
    fn from(e: ControlError) -> Refusal {
        let status = match e {
            ControlError::UnknownPool { .. } => StatusCode::NOT_FOUND,
            ControlError::InvalidConfig { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ControlError::Failed { .. } => StatusCode::CONFLICT,
            ControlError::ShutDown | ControlError::Unresponsive { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal::new(status, e)
    }
}
