//! `POST /pools/{name}/pause|resume|drain|resize`: operate one pool.
//!
//! `resize` takes `{"max_size": N}`; `drain` takes an optional
//! `{"deadline": "5s"}` (default [`DEFAULT_DRAIN_DEADLINE`], at most
//! [`MAX_DRAIN_DEADLINE`]). Bodies are JSON of at most [`MAX_BODY`] bytes; unknown
//! fields are refused.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::StatusCode;
use poolvisor_actors::Supervisor;
use serde::Deserialize;

use super::response::{json, AdminResponse, Refusal};

/// The largest request body accepted.
pub const MAX_BODY: usize = 4096;
/// How long `drain` waits for lent connections when the body names no deadline.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// The longest `drain` deadline accepted (a request is not held open for longer).
pub const MAX_DRAIN_DEADLINE: Duration = Duration::from_secs(300);

/// The actions, as they appear in the path.
pub(super) const ACTIONS: [&str; 4] = ["pause", "resume", "drain", "resize"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeBody {
    max_size: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    #[serde(
        default = "default_drain_deadline",
        with = "poolvisor_actors::serde_duration"
    )]
    deadline: Duration,
}

fn default_drain_deadline() -> Duration {
    DEFAULT_DRAIN_DEADLINE
}

/// Runs `action` on pool `name`.
pub(super) async fn run(
    sup: &Supervisor,
    name: &str,
    action: &str,
    body: Incoming,
) -> AdminResponse {
    act(sup, name, action, body)
        .await
        .unwrap_or_else(Refusal::into_response)
}

async fn act(
    sup: &Supervisor,
    name: &str,
    action: &str,
    body: Incoming,
) -> Result<AdminResponse, Refusal> {
    let body = read_body(body).await?;
    let reply = match action {
        "pause" => {
            sup.pause(name)?;
            serde_json::json!({"pool": name, "state": "paused"})
        }
        "resume" => {
            sup.resume(name)?;
            serde_json::json!({"pool": name, "state": "resumed"})
        }
        "resize" => {
            let Some(ResizeBody { max_size }) = parse(&body)? else {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "a JSON body {\"max_size\": N} is required",
                ));
            };
            sup.resize(name, max_size)?;
            serde_json::json!({"pool": name, "max_size": max_size})
        }
        _ => {
            let deadline =
                parse::<DrainBody>(&body)?.map_or(DEFAULT_DRAIN_DEADLINE, |b| b.deadline);
            if deadline > MAX_DRAIN_DEADLINE {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "deadline: at most {}",
                        humantime::format_duration(MAX_DRAIN_DEADLINE)
                    ),
                ));
            }
            let report = sup.drain(name, deadline).await?;
            serde_json::json!({
                "pool": name,
                "closed_idle": report.closed_idle,
                "still_lent": report.still_lent,
            })
        }
    };
    Ok(json(StatusCode::OK, &reply))
}

async fn read_body(body: Incoming) -> Result<Bytes, Refusal> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the body could not be read",
        )),
    }
}

/// `None` for an empty body; 400 naming what is wrong with a bad one.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<Option<T>, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}
