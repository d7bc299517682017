//! The streams of one HTTP/2 connection, run as futures inside the connection's own task
//! and polled only when something woke them.
//!
//! A task per stream (hyper's way) costs a spawn and two cross-task wakeups per request;
//! one `FuturesUnordered` in the connection task costs an allocation per stream and cannot
//! drop a stream the client reset. Here every stream has a slot with a waker of its own:
//! waking it queues the slot's key and wakes the connection task, which then polls only
//! the queued slots. The connection also polls a stream's response body with the same
//! waker, so one ready list serves the request's run through the pipeline and its
//! response. Slots, their wakers and their future boxes are reused: after the first few
//! streams of a connection, starting a stream allocates nothing here.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Freed slots that keep their future's box for the next stream; past this many, a freed
/// slot gives its box back (a connection that once ran many streams at a time does not
/// keep all their memory).
const KEPT_BOXES: usize = 8;

/// The keys of woken slots, and the connection task to wake when one is added.
#[derive(Debug, Default)]
struct ReadyList {
    keys: Mutex<Vec<usize>>,
    task: AtomicWaker,
}

/// One slot's waker.
#[derive(Debug)]
struct SlotWaker {
    key: usize,
    /// Already in the ready list (cleared when the connection takes it).
    queued: AtomicBool,
    ready: Arc<ReadyList>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready
                .keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.key);
            self.ready.task.wake();
        }
    }
}

/// One stream's slot.
struct Slot<F> {
    /// The future's box, kept empty after the future is done so the next stream can
    /// reuse it.
    future: Option<Pin<Box<Option<F>>>>,
    /// The slot belongs to a stream.
    live: bool,
    signal: Arc<SlotWaker>,
    waker: Waker,
}

/// The futures of one connection's streams.
pub struct Tasks<F> {
    slots: Vec<Slot<F>>,
    free: Vec<usize>,
    ready: Arc<ReadyList>,
    /// Taken from the ready list, to be polled.
    woken: Vec<usize>,
}

impl<F: Future> Default for Tasks<F> {
    fn default() -> Tasks<F> {
        Tasks::new()
    }
}

impl<F: Future> Tasks<F> {
    /// No streams.
    pub fn new() -> Tasks<F> {
        Tasks {
            slots: Vec::new(),
            free: Vec::new(),
            ready: Arc::new(ReadyList::default()),
            woken: Vec::new(),
        }
    }

    /// Takes a free slot for a stream about to start; returns its key. The slot's waker
    /// ([`Tasks::waker`]) can be handed out before [`Tasks::start`] gives it its future.
    pub fn vacant(&mut self) -> usize {
        let key = match self.free.pop() {
            Some(key) => key,
            None => {
                let key = self.slots.len();
                let signal = Arc::new(SlotWaker {
                    key,
                    queued: AtomicBool::new(false),
                    ready: Arc::clone(&self.ready),
                });
                let waker = Waker::from(Arc::clone(&signal));
                self.slots.push(Slot {
                    future: None,
                    live: false,
                    signal,
                    waker,
                });
                key
            }
        };
        self.slots[key].live = true;
        key
    }

    /// Runs `future` in `key`'s slot (from [`Tasks::vacant`]), queued to be polled at once.
    pub fn start(&mut self, key: usize, future: F) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        match &mut slot.future {
            Some(kept) => kept.set(Some(future)),
            None => slot.future = Some(Box::pin(Some(future))),
        }
        slot.waker.wake_by_ref();
    }

    /// Frees `key`'s slot, dropping its future if it is still running.
    pub fn release(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if !slot.live {
            return;
        }
        slot.live = false;
        if self.free.len() >= KEPT_BOXES {
            slot.future = None;
        } else if let Some(future) = &mut slot.future {
            // Dropped in place: a running future's work ends now, the box stays.
            future.set(None);
        }
        self.free.push(key);
    }

    /// The waker that queues `key`'s slot.
    pub fn waker(&self, key: usize) -> &Waker {
        &self.slots[key].waker
    }

    /// Registers the connection task and takes the keys woken since the last call;
    /// `None` when none were.
    pub fn take_woken(&mut self, cx: &Context<'_>) -> Option<Vec<usize>> {
        self.ready.task.register(cx.waker());
        let mut woken = std::mem::take(&mut self.woken);
        {
            let mut keys = self.ready.keys.lock().unwrap_or_else(|p| p.into_inner());
            if keys.is_empty() {
                self.woken = woken;
                return None;
            }
            std::mem::swap(&mut *keys, &mut woken);
        }
        for &key in &woken {
            if let Some(slot) = self.slots.get(key) {
                slot.signal.queued.store(false, Ordering::Release);
            }
        }
        Some(woken)
    }

    /// Gives back the key list [`Tasks::take_woken`] returned, for reuse.
    pub fn recycle(&mut self, mut keys: Vec<usize>) {
        keys.clear();
        self.woken = keys;
    }

    /// Whether `key` is a stream's slot (a wake may name a slot freed since).
    pub fn is_live(&self, key: usize) -> bool {
        self.slots.get(key).is_some_and(|slot| slot.live)
    }

    /// Polls `key`'s future if it is still running; `Ready` once, with its output.
    pub fn poll(&mut self, key: usize) -> Poll<F::Output> {
        let Some(slot) = self.slots.get_mut(key) else {
            return Poll::Pending;
        };
        let Some(kept) = &mut slot.future else {
            return Poll::Pending;
        };
        let Some(future) = kept.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        let mut cx = Context::from_waker(&slot.waker);
        let output = future.poll(&mut cx);
        if output.is_ready() {
            kept.set(None);
        }
        output
    }
}
