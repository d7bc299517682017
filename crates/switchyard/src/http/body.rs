//! Bodies as they cross the proxy: streamed frame by frame, never buffered whole.
//!
//! [`RequestBody`] carries the client's body upstream, counting bytes and enforcing
//! `max_request_body` as it streams (a body that passes the limit is cut off and the
//! exchange answered 413). [`ResponseBody`] carries an upstream's body (or a proxy-made
//! one) back to the client, counting bytes, and runs the exchange's completion when the
//! last frame has gone or the client went away: the upstream connection returns to its
//! pool only after its body was read to the end, and the access-log line and metrics are
//! written exactly once. hyper's own buffers and HTTP/2 flow control bound what one stream
//! can hold, so backpressure reaches the far side unchanged. An upstream's body also
//! carries the exchange's after-head clock (`idle_timeout`, `max_duration`, the
//! endpoint's drain: [`super::exchange_clock`]) and, when an HTTP/1.1 upstream's head
//! fields were kept raw, those fields until the server takes them ([`super::raw_fields`]);
//! a request body likewise carries the fields its head gains on the way upstream
//! ([`super::added_fields`]).
//!
//! A slow request body (SPEC 3.1 `request_body_timeout`, `min_request_body_rate`) is cut
//! off and answered 408. Only time spent *waiting for the client* counts: while the upstream
//! does not ask for more (backpressure), the client is not to blame. The client may wait
//! at most `request_body_timeout` between two pieces, and over all its waiting it must
//! keep up `min_request_body_rate` after a grace of `request_body_timeout`
//! ([`BodyPace::allowance`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use tokio::time::{Instant, Sleep};

use super::added_fields::AddedFields;
use super::exchange_clock::{ExchangeClock, ExchangeTimeout};
use super::h1_server::conn::H1Body;
use super::h2_server::ClientH2Body;
use super::raw_fields::{self, RawFields};
use super::upstream::UpstreamBody;

/// What a body stream can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Shared between the body being streamed and the pipeline that waits on the upstream.
#[derive(Debug, Default)]
pub struct BodyProgress {
    bytes: AtomicU64,
    over_limit: AtomicBool,
    too_slow: AtomicBool,
}

/// How fast a client must send its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// `request_body_timeout`: the longest wait for one piece, and the grace before the
    /// rate counts.
    pub timeout: Duration,
    /// `min_request_body_rate` in bytes per second; 0 = no rate, only the timeout.
    pub min_rate: u64,
}

impl BodyPace {
    /// How much longer the client may keep us waiting, having sent `bytes` so far while we
    /// already waited `waited` in all: at most `timeout`, and no longer than keeps the
    /// average over `timeout + waiting` at `min_rate`. Pure.
    pub fn allowance(&self, bytes: u64, waited: Duration) -> Duration {
        if self.min_rate == 0 {
            return self.timeout;
        }
        let earned = Duration::from_secs_f64(bytes as f64 / self.min_rate as f64);
        self.timeout
            .min((self.timeout + earned).saturating_sub(waited))
    }
}

/// The pacing state of one client body.
#[derive(Debug)]
struct Pacing {
    pace: BodyPace,
    /// Time spent waiting for the client before the current wait.
    waited: Duration,
    /// When the current wait began (`None`: not waiting).
    since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

/// The request body was slower than `min_request_body_rate` / `request_body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body slower than min_request_body_rate / request_body_timeout")]
pub struct BodyTooSlow;

impl BodyProgress {
    /// Body bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Counts `n` more body bytes; the new total.
    pub(super) fn add(&self, n: u64) -> u64 {
        self.bytes.fetch_add(n, Ordering::Relaxed) + n
    }

    /// Whether the body passed `max_request_body` while streaming.
    pub fn over_limit(&self) -> bool {
        self.over_limit.load(Ordering::Relaxed)
    }

    /// Whether the body was cut off for being too slow.
    pub fn too_slow(&self) -> bool {
        self.too_slow.load(Ordering::Relaxed)
    }
}

/// The request body passed `max_request_body` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_request_body ({0} bytes)")]
pub struct BodyTooLarge(pub u64);

/// A client's request body as its connection delivers it: hyper's (HTTP/1.1, `Left`) or
/// an HTTP/2 stream's (`Right`).
pub type ClientBody = Either<H1Body, ClientH2Body>;

/// A client's request body on its way upstream: the client's stream, or a replay of a
/// body recorded during an earlier attempt.
#[derive(Debug)]
pub struct RequestBody {
    source: RequestSource,
    limit: Option<u64>,
    /// `None` for a body that had ended before it was made: nothing to count, and no
    /// allocation for the usual request without a body.
    progress: Option<Arc<BodyProgress>>,
    recorder: Option<Arc<Mutex<Replay>>>,
    pacing: Option<Pacing>,
    /// The head's fields kept beside its map (module `added_fields`), until the HTTP/1.1
    /// client writes them or a reader of the whole map moves them into it.
    added: AddedFields,
}

#[derive(Debug)]
enum RequestSource {
    Client(ClientBody),
    Replay {
        data: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Done,
}

impl RequestBody {
    /// Wraps `inner`, cutting it off past `limit` bytes or when slower than `pace`.
    pub fn new(inner: ClientBody, limit: Option<u64>, pace: Option<BodyPace>) -> RequestBody {
        let pacing = pace
            .filter(|p| !p.timeout.is_zero() && !inner.is_end_stream())
            .map(|pace| Pacing {
                pace,
                waited: Duration::ZERO,
                since: None,
                timer: Box::pin(tokio::time::sleep(pace.timeout)),
            });
        RequestBody {
            progress: (!inner.is_end_stream()).then(Arc::default),
            source: RequestSource::Client(inner),
            limit,
            recorder: None,
            pacing,
            added: AddedFields::default(),
        }
    }

    /// A body that has already ended.
    pub fn empty() -> RequestBody {
        RequestBody {
            source: RequestSource::Done,
            limit: None,
            progress: None,
            recorder: None,
            pacing: None,
            added: AddedFields::default(),
        }
    }

    /// This body, carrying its head's `added` fields.
    pub fn with_added_fields(mut self, added: AddedFields) -> RequestBody {
        self.set_added_fields(added);
        self
    }

    /// Gives the head's added fields (module `added_fields`) to the body, which carries
    /// them to whichever client writes the head.
    pub fn set_added_fields(&mut self, added: AddedFields) {
        self.added = added;
    }

    /// The head's added fields, taken: the caller writes them or moves them into the map.
    pub fn take_added_fields(&mut self) -> AddedFields {
        std::mem::take(&mut self.added)
    }

    /// The client has nothing for us now: start (or go on) waiting; `true` once the wait
    /// is longer than the pace allows.
    fn waited_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let bytes = self.progress.as_ref().map_or(0, |p| p.bytes());
        let Some(p) = &mut self.pacing else {
            return false;
        };
        if p.since.is_none() {
            let now = Instant::now();
            p.since = Some(now);
            let allowance = p.pace.allowance(bytes, p.waited);
            p.timer.as_mut().reset(now + allowance);
        }
        p.timer.as_mut().poll(cx).is_ready()
    }

    /// A piece arrived: the current wait ends.
    fn stop_waiting(&mut self) {
        if let Some(p) = &mut self.pacing {
            if let Some(since) = p.since.take() {
                p.waited += since.elapsed();
            }
        }
    }

    /// The byte count and limit flag, readable while the body streams; `None` for a body
    /// that had ended before it was made.
    pub fn progress(&self) -> Option<Arc<BodyProgress>> {
        self.progress.clone()
    }

    /// Keeps a copy of the first `capacity` bytes as they stream, so a retry or a hedge
    /// can send the body again ([`Replay::body`]); a longer body is not kept (and not
    /// replayable).
    pub fn record(&mut self, capacity: u64) -> Arc<Mutex<Replay>> {
        let mut replay = Replay {
            capacity,
            ..Replay::default()
        };
        if self.is_end_stream() {
            replay.state = ReplayState::Complete;
        }
        let replay = Arc::new(Mutex::new(replay));
        self.recorder = Some(Arc::clone(&replay));
        replay
    }

    fn keep(&self, frame: &Frame<Bytes>, last: bool) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let mut replay = recorder.lock().unwrap_or_else(|p| p.into_inner());
        replay.keep(frame, last);
    }
}

/// Where a recorded body stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ReplayState {
    /// Still streaming, everything so far kept.
    #[default]
    Recording,
    /// The whole body is kept.
    Complete,
    /// The body outgrew the buffer (or broke): it cannot be sent again.
    Lost,
}

/// A bounded copy of a request body, shared between the body being sent and the attempt
/// loop that may need to send it again.
#[derive(Debug, Default)]
pub struct Replay {
    data: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    bytes: u64,
    capacity: u64,
    state: ReplayState,
}

impl Replay {
    fn keep(&mut self, frame: &Frame<Bytes>, last: bool) {
        if self.state != ReplayState::Recording {
            return;
        }
        if let Some(data) = frame.data_ref() {
            self.bytes += data.len() as u64;
            if self.bytes > self.capacity {
                self.state = ReplayState::Lost;
                self.data = Vec::new();
                return;
            }
            self.data.push(data.clone());
        } else if let Some(trailers) = frame.trailers_ref() {
            self.trailers = Some(trailers.clone());
        }
        if last {
            self.state = ReplayState::Complete;
        }
    }

    fn end(&mut self, clean: bool) {
        if self.state == ReplayState::Recording {
            self.state = if clean {
                ReplayState::Complete
            } else {
                ReplayState::Lost
            };
        }
    }

    /// Whether the body outgrew the buffer (it will never be replayable).
    pub fn is_lost(&self) -> bool {
        self.state == ReplayState::Lost
    }

    /// The whole body again, once it was read to its end within the buffer.
    pub fn body(&self, progress: Option<&Arc<BodyProgress>>) -> Option<RequestBody> {
        (self.state == ReplayState::Complete).then(|| RequestBody {
            source: RequestSource::Replay {
                data: self.data.iter().cloned().collect(),
                trailers: self.trailers.clone(),
            },
            limit: None,
            progress: progress.cloned(),
            recorder: None,
            pacing: None,
            added: AddedFields::default(),
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = match &mut this.source {
            RequestSource::Done => return Poll::Ready(None),
            RequestSource::Replay { data, trailers } => {
                let frame = match data.pop_front() {
                    Some(bytes) => Some(Ok(Frame::data(bytes))),
                    None => trailers.take().map(|t| Ok(Frame::trailers(t))),
                };
                if frame.is_none() {
                    this.source = RequestSource::Done;
                }
                return Poll::Ready(frame);
            }
            RequestSource::Client(inner) => inner,
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if polled.is_ready() {
            this.stop_waiting();
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let length = data.len() as u64;
                    let total = this.progress.as_ref().map_or(length, |p| p.add(length));
                    if let Some(limit) = this.limit {
                        if total > limit {
                            if let Some(progress) = &this.progress {
                                progress.over_limit.store(true, Ordering::Relaxed);
                            }
                            this.source = RequestSource::Done;
                            this.end_recording(false);
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge(limit)))));
                        }
                    }
                }
                let last = this.is_end_stream();
                this.keep(&frame, last);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.end_recording(false);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.source = RequestSource::Done;
                this.pacing = None;
                this.end_recording(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.waited_too_long(cx) {
                    if let Some(progress) = &this.progress {
                        progress.too_slow.store(true, Ordering::Relaxed);
                    }
                    this.source = RequestSource::Done;
                    this.pacing = None;
                    this.end_recording(false);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            RequestSource::Done => true,
            RequestSource::Replay { data, trailers } => data.is_empty() && trailers.is_none(),
            RequestSource::Client(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            RequestSource::Done => SizeHint::with_exact(0),
            RequestSource::Replay { data, .. } => {
                SizeHint::with_exact(data.iter().map(|b| b.len() as u64).sum())
            }
            RequestSource::Client(inner) => inner.size_hint(),
        }
    }
}

impl RequestBody {
    fn end_recording(&self, clean: bool) {
        if let Some(recorder) = &self.recorder {
            recorder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .end(clean);
        }
    }
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyEnd {
    /// The last frame was sent (false: dropped early, client gone or upstream broke).
    pub complete: bool,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// `grpc-status` from the trailers, when they carried one.
    pub grpc_status: Option<u32>,
}

/// Runs once when a response body is finished.
pub trait Completion: Send + 'static {
    /// The body ended.
    fn finish(self: Box<Self>, end: BodyEnd);
}

enum Source {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// A response body on its way to the client.
pub struct ResponseBody {
    source: Source,
    bytes: u64,
    grpc_status: Option<u32>,
    done: Option<Box<dyn Completion>>,
    /// The exchange's after-head bounds (upstream bodies only).
    clock: Option<ExchangeClock>,
    /// The response head's fields kept raw (module `raw_fields`), until the server takes
    /// them.
    raw: Option<Box<RawFields>>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// An upstream's body.
    pub fn upstream(mut inner: UpstreamBody) -> ResponseBody {
        let raw = raw_fields::take(&mut inner);
        ResponseBody {
            source: Source::Upstream(inner),
            bytes: 0,
            grpc_status: None,
            done: None,
            clock: None,
            raw,
        }
    }

    /// A body of the proxy's own.
    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody {
            source: if bytes.is_empty() {
                Source::Empty
            } else {
                Source::Full(Some(bytes))
            },
            bytes: 0,
            grpc_status: None,
            done: None,
            clock: None,
            raw: None,
        }
    }

    /// The response head's fields kept raw, if they were (the head's map holds the rest),
    /// to add the request id to them.
    pub fn raw_fields_mut(&mut self) -> Option<&mut RawFields> {
        self.raw.as_deref_mut()
    }

    /// The response head's raw fields, taken: the caller writes them or moves them into
    /// the head's map.
    pub fn take_raw_fields(&mut self) -> Option<Box<RawFields>> {
        self.raw.take()
    }

    /// Bounds the body by `clock`: when it expires the body ends with an
    /// [`ExchangeTimeout`] error (and the upstream's side of the exchange is dropped).
    pub fn bound_by(&mut self, clock: ExchangeClock) {
        self.clock = Some(clock);
    }

    /// Ends the body for `timeout`: the upstream's side goes now (its connection is not
    /// reused) and the exchange completes as cut short.
    fn expire(&mut self, timeout: ExchangeTimeout) -> ExchangeTimeout {
        self.source = Source::Empty;
        self.clock = None;
        self.finish(false);
        timeout
    }

    /// Runs `done` when the body ends (replacing any earlier completion).
    pub fn on_finish(&mut self, done: Box<dyn Completion>) {
        self.done = Some(done);
    }

    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            done.finish(BodyEnd {
                complete,
                bytes: self.bytes,
                grpc_status: self.grpc_status,
            });
        }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(bytes: Bytes) -> ResponseBody {
        ResponseBody::full(bytes)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let complete = matches!(self.source, Source::Empty);
        self.finish(complete);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.source {
            Source::Empty => Poll::Ready(None),
            Source::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Upstream(_) if this.clock.as_ref().is_some_and(ExchangeClock::is_drained) => {
                return Poll::Ready(Some(Err(Box::new(this.expire(ExchangeTimeout::Drained)))));
            }
            Source::Upstream(inner) => match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => match this.clock.as_mut().map(|clock| clock.poll_expired(cx)) {
                    Some(Poll::Ready(timeout)) => {
                        return Poll::Ready(Some(Err(Box::new(this.expire(timeout)))));
                    }
                    _ => Poll::Pending,
                },
                polled => {
                    if let Some(clock) = &mut this.clock {
                        clock.moved();
                    }
                    polled
                }
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.grpc_status = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                }
                if this.is_end_stream() {
                    this.source = Source::Empty;
                    this.finish(true);
                }
            }
            Poll::Ready(None) => {
                this.source = Source::Empty;
                this.finish(true);
            }
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Empty => true,
            Source::Full(bytes) => bytes.is_none(),
            Source::Upstream(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Empty => SizeHint::with_exact(0),
            Source::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Source::Upstream(inner) => inner.size_hint(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn the_pace_allows_the_timeout_per_wait_and_the_rate_over_all_waiting() {
        let pace = BodyPace {
            timeout: Duration::from_secs(20),
            min_rate: 500,
        };
        // Nothing sent yet: the grace.
        assert_eq!(pace.allowance(0, Duration::ZERO), Duration::from_secs(20));
        // 10 s waited for 1000 bytes (2 s earned): 12 s left of the 22 s budget.
        assert_eq!(
            pace.allowance(1000, Duration::from_secs(10)),
            Duration::from_secs(12)
        );
        // Far behind the rate: no wait left.
        assert_eq!(pace.allowance(500, Duration::from_secs(60)), Duration::ZERO);
        // Far ahead: still at most the timeout for one wait.
        assert_eq!(
            pace.allowance(1 << 30, Duration::from_secs(5)),
            Duration::from_secs(20)
        );
        let no_rate = BodyPace {
            min_rate: 0,
            ..pace
        };
        assert_eq!(
            no_rate.allowance(0, Duration::from_secs(600)),
            Duration::from_secs(20)
        );
    }

    struct Record(Arc<Mutex<Vec<(bool, u64)>>>);

    impl Completion for Record {
        fn finish(self: Box<Self>, end: BodyEnd) {
            self.0.lock().unwrap().push((end.complete, end.bytes));
        }
    }

    #[tokio::test]
    async fn a_full_body_finishes_once_with_its_length() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut body = ResponseBody::full(Bytes::from_static(b"hello"));
        body.on_finish(Box::new(Record(Arc::clone(&seen))));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        assert_eq!(*seen.lock().unwrap(), vec![(true, 5)]);
    }

    #[test]
    fn a_body_dropped_unread_finishes_incomplete() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut body = ResponseBody::full(Bytes::from_static(b"hello"));
        body.on_finish(Box::new(Record(Arc::clone(&seen))));
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![(false, 0)]);
    }
}
