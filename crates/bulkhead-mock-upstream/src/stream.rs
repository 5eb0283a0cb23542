//! Response bodies written frame by frame from a producer task.
//!
//! Streaming answers and the faults that stall or cut a body need control
//! over each frame hyper sends: every event must be its own frame so it
//! really streams, a stall must keep the response open, and a cut must reach
//! hyper as a body error so it aborts the connection instead of ending the
//! body cleanly.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use http_body_util::channel::{Channel, Sender};
use tokio::sync::{oneshot, watch};

use crate::{InFlight, Shared};

/// Frames a producer may run ahead of the client. Small, so that a slow
/// reader pushes back on the producer instead of growing the buffer.
const FRAMES_BUFFERED: usize = 8;

/// How long a cut waits after hyper has taken the last frame, so that hyper
/// has written it to the socket before the body error tears the connection
/// down (hyper drops unflushed bytes on a body error).
const CUT_FLUSH_GRACE: Duration = Duration::from_millis(50);

/// The writing end of a body made by [`channel_body`].
pub(crate) struct Producer {
    frames: Sender<Bytes, io::Error>,
    /// Resolves (with an error) once hyper has dropped the body, which it does
    /// when the response ends or the client goes away.
    body_gone: oneshot::Receiver<()>,
    shutdown: watch::Receiver<bool>,
}

/// Kept alive by the body itself, so that dropping the body ends the lease.
struct Lease {
    _in_flight: Option<InFlight>,
    _body_alive: oneshot::Sender<()>,
}

/// Makes a body fed by the returned [`Producer`]. When `in_flight` is given,
/// the response counts as in flight until hyper drops the body.
pub(crate) fn channel_body(shared: &Arc<Shared>, in_flight: Option<InFlight>) -> (Producer, Body) {
    let (frames, channel) = Channel::<Bytes, io::Error>::new(FRAMES_BUFFERED);
    let (body_alive, body_gone) = oneshot::channel();
    let lease = Lease {
        _in_flight: in_flight,
        _body_alive: body_alive,
    };
    // The closure owns the lease only so that it lives exactly as long as the
    // body: hyper drops the body the moment the client disconnects, which is
    // what `in_flight` must observe. The error passes through unchanged.
    let body = channel.map_err(move |err| {
        let _lease = &lease;
        err
    });
    let producer = Producer {
        frames,
        body_gone,
        shutdown: shared.shutdown.clone(),
    };
    (producer, Body::new(body))
}

impl Producer {
    /// Queues one frame. Returns false once the client is gone.
    pub(crate) async fn send(&mut self, frame: Bytes) -> bool {
        self.frames.send_data(frame).await.is_ok()
    }

    /// Waits for `duration`. Returns false early if the client went away or
    /// the server is stopping, in which case the producer should stop.
    pub(crate) async fn pause(&mut self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            _ = &mut self.body_gone => false,
            () = crate::stopped(&mut self.shutdown) => false,
        }
    }

    /// Ends the body with an error after the frames already queued have been
    /// written, so the client sees a connection closed mid-body.
    pub(crate) async fn cut(mut self) {
        // The channel gives a frame's capacity back only when hyper takes it.
        while self.frames.capacity() < self.frames.max_capacity() {
            if !self.pause(Duration::from_millis(1)).await {
                break;
            }
        }
        self.pause(CUT_FLUSH_GRACE).await;
        self.abort();
    }

    /// Ends the body with an error at once; hyper then aborts the connection.
    pub(crate) fn abort(self) {
        self.frames.abort(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "mock upstream cut the response",
        ));
    }
}
