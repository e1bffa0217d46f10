//! `GET /events`: health events as a Server-Sent Events stream.
//!
//! Each event is `id: <seq>`, `event: <kind>` (`down`, `recovered`, ...) and one `data:`
//! line of JSON. A subscriber that falls behind gets an `event: missed` with how many it
//! lost. A comment line every [`KEEPALIVE`] keeps proxies from closing the stream and
//! notices a client that went away; the stream ends when the supervisor shuts down.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use poolvisor_actors::{EventError, EventStream, HealthEvent};
use tokio::sync::mpsc;

use super::response::AdminResponse;

/// How often an idle stream sends a comment line.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Frames queued for a client that reads slowly; past this the pump waits (and the
/// event bus, not this queue, decides what a slow subscriber misses).
const QUEUE: usize = 16;

/// A response that streams `events` until the supervisor closes them or the client
/// goes away.
pub(super) fn stream(events: EventStream) -> AdminResponse {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(pump(events, tx));
    let mut resp = Response::new(SseBody { rx }.boxed());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn pump(mut events: EventStream, tx: mpsc::Sender<Bytes>) {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let chunk = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => frame(&event),
                Err(EventError::Missed { missed }) => Bytes::from(format!(
                    "event: missed\ndata: {{\"missed\":{missed}}}\n\n"
                )),
                Err(EventError::Closed) => return,
            },
            // The first tick is immediate: it tells the client the stream is open.
            _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
            () = tx.closed() => return,
        };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// One event in SSE framing.
pub(super) fn frame(event: &HealthEvent) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_string());
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.seq,
        event.kind.name()
    ))
}

struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}
