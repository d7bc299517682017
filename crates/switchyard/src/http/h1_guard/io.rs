//! The guard as a stream: it sits between the client socket and hyper's HTTP/1.1 server,
//! hands hyper only bytes [`Framing`] has passed, enforces `header_read_timeout` (from
//! accept for the first head, from its first byte for later ones) and `idle_timeout`
//! between requests, and answers a refused head itself, with the proxy's own response,
//! when hyper shuts the connection down (never in the middle of a response hyper is still
//! writing).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::framing::Framing;
use super::head::HeadLimits;
use crate::http::error::ProxyError;

/// How the guard checks one connection.
#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    /// Head size and field limits.
    pub limits: HeadLimits,
    /// A head must be complete within this.
    pub header_read_timeout: Duration,
    /// Between requests, nothing moving for this long closes the connection.
    pub idle_timeout: Duration,
}

/// What the guard refused, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A head broke a rule; answered with this error.
    Malformed(ProxyError),
    /// A head did not complete within `header_read_timeout` (answered 408).
    SlowHead,
    /// Idle between requests for `idle_timeout` (closed quietly).
    Idle,
}

/// Read access to what a guard refused, after hyper took the guard.
#[derive(Debug, Clone, Default)]
pub struct RejectionHandle(Arc<Mutex<Option<Rejection>>>);

impl RejectionHandle {
    /// What was refused, if anything.
    pub fn get(&self) -> Option<Rejection> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, rejection: Rejection) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(rejection);
    }
}

/// An HTTP/1.1 client stream with its request heads checked.
#[derive(Debug)]
pub struct H1Guard<S> {
    inner: S,
    config: GuardConfig,
    framing: Framing,
    ready: BytesMut,
    scratch: Box<[u8]>,
    /// The answer to write before shutting down, once refused.
    answer: Option<Bytes>,
    refused: bool,
    eof: bool,
    timer: Pin<Box<Sleep>>,
    timer_is_head: bool,
    /// A response moved since the idle clock was armed (so the connection is not idle).
    wrote: bool,
    /// The clock is parked far away while a body streams.
    parked: bool,
    rejection: RejectionHandle,
}

const READ_CHUNK: usize = 16 * 1024;

impl<S> H1Guard<S> {
    /// Guards `inner`; the head-read clock starts now.
    pub fn new(inner: S, config: GuardConfig) -> H1Guard<S> {
        H1Guard {
            inner,
            config,
            framing: Framing::new(config.limits),
            ready: BytesMut::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            answer: None,
            refused: false,
            eof: false,
            timer: Box::pin(tokio::time::sleep(config.header_read_timeout)),
            timer_is_head: true,
            wrote: false,
            parked: false,
            rejection: RejectionHandle::default(),
        }
    }

    /// A handle that tells, after the connection ended, what the guard refused.
    pub fn rejection_handle(&self) -> RejectionHandle {
        self.rejection.clone()
    }

    fn refuse(&mut self, rejection: Rejection) {
        self.refused = true;
        self.answer = match rejection {
            Rejection::Malformed(error) => Some(error.to_h1_bytes()),
            Rejection::SlowHead => Some(
                ProxyError::Request {
                    status: StatusCode::REQUEST_TIMEOUT,
                    details: "header_read_timeout",
                }
                .to_h1_bytes(),
            ),
            Rejection::Idle => None,
        };
        self.rejection.set(rejection);
    }

    fn arm_idle(&mut self) {
        self.timer_is_head = false;
        self.wrote = false;
        self.parked = false;
        self.timer
            .as_mut()
            .reset(Instant::now() + self.config.idle_timeout);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for H1Guard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.refused || this.eof {
                return Poll::Ready(Ok(()));
            }
            let watching = this.framing.holds_head_bytes()
                || this.timer_is_head
                || this.framing.between_requests();
            if watching && this.timer.as_mut().poll(cx).is_ready() {
                if !this.timer_is_head && this.wrote {
                    // Writes since the clock was armed: not idle; start a new period.
                    this.arm_idle();
                    continue;
                }
                if this.timer_is_head {
                    this.refuse(Rejection::SlowHead);
                } else {
                    this.refuse(Rejection::Idle);
                }
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let filled = read.filled();
            if filled.is_empty() {
                this.eof = true;
                return Poll::Ready(Ok(()));
            }
            let was_between = this.framing.between_requests();
            if let Err(error) = this.framing.advance_into(filled, &mut this.ready) {
                // Bytes before the refused head were passed; hyper gets them, then EOF.
                this.refuse(Rejection::Malformed(error));
                continue;
            }
            if was_between && this.framing.holds_head_bytes() {
                // The first byte of a later head: its clock starts now.
                this.timer_is_head = true;
                this.parked = false;
                this.timer
                    .as_mut()
                    .reset(Instant::now() + this.config.header_read_timeout);
            } else if this.framing.between_requests() && (this.timer_is_head || this.parked) {
                this.arm_idle();
            } else if !this.parked
                && !this.framing.holds_head_bytes()
                && !this.framing.between_requests()
            {
                // In a body: neither clock applies (parked once per body, not per read).
                this.timer_is_head = false;
                this.parked = true;
                this.timer
                    .as_mut()
                    .reset(Instant::now() + Duration::from_secs(86_400 * 365));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for H1Guard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, data))?;
        // A response is moving: the connection is not idle (checked when the clock fires,
        // so a write costs no clock read).
        self.wrote = true;
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.wrote = true;
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while let Some(answer) = this.answer.as_mut() {
            if answer.is_empty() {
                this.answer = None;
                break;
            }
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, answer))?;
            if n == 0 {
                this.answer = None;
                break;
            }
            answer.advance(n);
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
