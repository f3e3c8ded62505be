//! One set-up TCP connection to a neighbour: a writer thread that cuts messages into frames
//! and sends them (with heartbeats, a goodbye at the end, or an abort), a reader thread that
//! decrypts the stream and queues data frames in a bounded inbox, and the [`Hub`] that the
//! two links of a transport share, so that a failure seen on one link is passed on over the
//! other at once.
//!
//! # Why a writer thread
//!
//! The inbox is bounded, so a reader stops reading when its party does not take what
//! arrives. If sending happened on the party's own thread, three parties each sending a
//! large message to the next before receiving would all block: a deadlock. With a writer
//! thread, `send` only queues the message (which the party already holds), the party goes
//! on to its receive, and every message sent is eventually taken, in order.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustls::Connection;

use crate::frame::{Frame, FrameDecoder, FrameKind, abort_payload, header, parse_abort};
use crate::{FailureKind, LinkConfig, PartyId, TransportError};

/// The longest a link thread sleeps before looking at its flags again.
const POLL: Duration = Duration::from_millis(200);

/// Plaintext bytes of message per data frame (or the maximum frame length, if smaller). TLS
/// state is locked for one frame at a time, so the reader can decrypt in between.
pub(crate) const DATA_FRAME: usize = 256 << 10;

/// How long a dropped transport's reader keeps draining a connection (so the peer's last
/// bytes are not answered by a reset) before closing it.
const LINGER: Duration = Duration::from_secs(2);

/// How long a stopping transport waits for its writers to get the abort frames out.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(2);

/// How late a thread may wake up (past the interval it asked for) before the delay counts as
/// time this process was not running rather than time a peer was silent.
const SCHEDULING_SLACK: Duration = Duration::from_millis(100);

/// How long a writer whose write failed waits for the reader to find why (the peer's abort,
/// or the end of its stream) before it reports the lost connection itself.
const WRITE_FAILURE_GRACE: Duration = Duration::from_millis(500);

/// Measures how long something has lasted in time this process was running, as seen by a
/// loop that looks at least every `tick`.
///
/// Each look adds the time since the previous one, but at most `tick` plus
/// [`SCHEDULING_SLACK`]: a longer gap means this thread was not scheduled (the process was
/// stopped with SIGSTOP, a virtual machine was paused, the host was swapping), and the time
/// it missed is not held against a peer. So a party resumed after a stop first reads what its
/// peers sent meanwhile (often an abort naming it) instead of declaring them silent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AwakeTimer {
    last: Instant,
    counted: Duration,
    max_step: Duration,
}

impl AwakeTimer {
    /// A timer at zero, for a loop that looks at least every `tick`.
    pub(crate) fn new(tick: Duration, now: Instant) -> Self {
        AwakeTimer {
            last: now,
            counted: Duration::ZERO,
            max_step: tick + SCHEDULING_SLACK,
        }
    }

    /// Back to zero at `now` (the peer was heard).
    pub(crate) fn reset(&mut self, now: Instant) {
        self.last = now;
        self.counted = Duration::ZERO;
    }

    /// Looks at `now`: adds the time since the last look (capped) and returns the total.
    pub(crate) fn observe(&mut self, now: Instant) -> Duration {
        let step = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.counted += step.min(self.max_step);
        self.counted
    }
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: every critical
/// section here leaves its data consistent at each step, and a poisoned connection fails on
/// its next use anyway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The first failure of a transport.
#[derive(Clone, Debug)]
struct Failure {
    /// The party blamed.
    culprit: PartyId,
    /// The neighbour that told us, when the blamed party did not itself.
    reported_by: Option<PartyId>,
    /// What kind of failure: all that the aborts tell the neighbours.
    kind: FailureKind,
    /// Why this party stopped itself, in its own words (never sent).
    local_reason: String,
    /// The link (0 next, 1 prev) on which it was seen; `None` when this party stopped itself.
    origin: Option<usize>,
}

/// What a link's reader has queued for its party.
#[derive(Debug, Default)]
struct Inbox {
    /// Data frames and whether each ends a message.
    frames: VecDeque<(Vec<u8>, bool)>,
    /// Payload bytes in `frames`.
    bytes: usize,
    /// Why the link ended, once it has: delivered after the frames.
    end: Option<TransportError>,
}

/// State shared by a link's owner, its reader and writer threads, and the hub.
#[derive(Debug)]
pub(crate) struct LinkShared {
    peer: PartyId,
    inbox: Mutex<Inbox>,
    /// Signalled when frames or the end arrive, or the transport fails.
    ready: Condvar,
    /// Signalled when the party takes frames, or the link is torn down.
    space: Condvar,
    /// An abort to send at the next frame boundary: the party blamed and the kind of failure.
    abort: Mutex<Option<(PartyId, FailureKind)>>,
    abort_requested: AtomicBool,
    /// Every thread of the link stops now (a write in progress is abandoned).
    kill: AtomicBool,
    /// The owner dropped the link: the reader drains for a while, then stops.
    owner_gone: AtomicBool,
    /// The peer said goodbye: it reads nothing more, so no heartbeats go to it and a write
    /// that fails is no failure of the job.
    peer_done: AtomicBool,
    /// Set by the writer thread when it exits.
    writer_done: Mutex<bool>,
    writer_done_cv: Condvar,
}

impl LinkShared {
    fn new(peer: PartyId) -> Self {
        LinkShared {
            peer,
            inbox: Mutex::new(Inbox::default()),
            ready: Condvar::new(),
            space: Condvar::new(),
            abort: Mutex::new(None),
            abort_requested: AtomicBool::new(false),
            kill: AtomicBool::new(false),
            owner_gone: AtomicBool::new(false),
            peer_done: AtomicBool::new(false),
            writer_done: Mutex::new(false),
            writer_done_cv: Condvar::new(),
        }
    }

    fn killed(&self) -> bool {
        self.kill.load(Ordering::SeqCst)
    }

    fn request_abort(&self, culprit: PartyId, kind: FailureKind) {
        let mut slot = lock(&self.abort);
        if slot.is_none() {
            *slot = Some((culprit, kind));
        }
        self.abort_requested.store(true, Ordering::SeqCst);
    }

    fn wake(&self) {
        // Taking the lock orders the wake-up after any state change made before it.
        drop(lock(&self.inbox));
        self.ready.notify_all();
        self.space.notify_all();
    }

    /// Records why the link ended (the first reason wins).
    fn set_end(&self, error: TransportError) {
        let mut inbox = lock(&self.inbox);
        if inbox.end.is_none() {
            inbox.end = Some(error);
        }
        drop(inbox);
        self.ready.notify_all();
    }

    /// Waits until the writer thread has exited or `deadline` passed (`None`: no limit);
    /// returns whether it exited.
    fn wait_writer(&self, deadline: Option<Instant>) -> bool {
        let mut done = lock(&self.writer_done);
        while !*done {
            let wait = match deadline {
                None => POLL,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(POLL),
                    _ => return false,
                },
            };
            done = wait_on(&self.writer_done_cv, done, wait);
        }
        true
    }
}

/// What the two links of one transport share: the first failure, and each link's state so
/// that a failure on one stops the other.
#[derive(Debug)]
pub(crate) struct Hub {
    party: PartyId,
    failure: Mutex<Option<Failure>>,
    links: [Arc<LinkShared>; 2],
}

impl Hub {
    pub(crate) fn new(party: PartyId) -> Arc<Self> {
        Arc::new(Hub {
            party,
            failure: Mutex::new(None),
            links: [
                Arc::new(LinkShared::new(party.next())),
                Arc::new(LinkShared::new(party.prev())),
            ],
        })
    }

    /// Records the transport's first failure and has both writers send an abort blaming
    /// `culprit` for a failure of `kind`, then stop. Later failures change nothing.
    fn fail(
        &self,
        origin: Option<usize>,
        culprit: PartyId,
        reported_by: Option<PartyId>,
        kind: FailureKind,
        local_reason: String,
    ) {
        let mut failure = lock(&self.failure);
        if failure.is_some() {
            return;
        }
        for link in &self.links {
            link.request_abort(culprit, kind);
        }
        *failure = Some(Failure {
            culprit,
            reported_by,
            kind,
            local_reason,
            origin,
        });
        drop(failure);
        for link in &self.links {
            link.wake();
        }
    }

    /// A link ended with `error`: record it for that link's receives and fail the transport,
    /// blaming whom the error blames, for the error's [`TransportError::failure_kind`].
    fn link_failed(&self, index: usize, error: TransportError) {
        let link = &self.links[index];
        let (culprit, reported_by) = match &error {
            // Passed on: blame the same party, and say who told us.
            TransportError::PeerFailed { peer, .. } => {
                (*peer, (*peer != link.peer).then_some(link.peer))
            }
            other => (other.blamed_party().unwrap_or(link.peer), None),
        };
        let kind = error.failure_kind();
        let local_reason = error.to_string();
        link.set_end(error);
        self.fail(Some(index), culprit, reported_by, kind, local_reason);
    }

    /// Stops this party: both neighbours get an abort blaming it for a failure of `kind`;
    /// `reason` stays here (this party's own receives and sends fail with
    /// [`TransportError::Stopped`] and it). Does nothing if the transport already failed (the
    /// aborts are on their way).
    pub(crate) fn stop(&self, kind: FailureKind, reason: String) {
        self.fail(None, self.party, None, kind, reason);
    }

    /// Whether the transport failed or was stopped.
    pub(crate) fn failed(&self) -> bool {
        lock(&self.failure).is_some()
    }

    /// The error a receive or send on link `index` reports for a failure that did not happen
    /// on that link, if there is one.
    fn failure_elsewhere(&self, index: usize) -> Option<TransportError> {
        let failure = lock(&self.failure);
        let f = failure.as_ref()?;
        match f.origin {
            Some(origin) if origin == index => None,
            None => Some(TransportError::Stopped {
                reason: f.local_reason.clone(),
            }),
            Some(origin) => Some(TransportError::PeerFailed {
                peer: f.culprit,
                reported_by: f
                    .reported_by
                    .or(Some(self.links[origin].peer))
                    .filter(|&by| by != f.culprit),
                kind: f.kind,
            }),
        }
    }

    /// Waits (up to `grace` each) for both writers to exit, then kills whatever is left.
    pub(crate) fn finish(&self, grace: Option<Duration>) {
        let deadline = grace.map(|g| Instant::now() + g);
        for link in &self.links {
            if !link.wait_writer(deadline) {
                link.kill.store(true, Ordering::SeqCst);
                link.wake();
                link.wait_writer(Some(Instant::now() + POLL * 3));
            }
        }
    }
}

/// What the owner asks of a writer thread.
#[derive(Debug)]
enum WriterCmd {
    /// Send this message.
    Message(Vec<u8>),
    /// Say goodbye and close.
    Goodbye,
}

/// The owner's end of one connection.
#[derive(Debug)]
pub(crate) struct Link {
    index: usize,
    shared: Arc<LinkShared>,
    hub: Arc<Hub>,
    to_writer: Sender<WriterCmd>,
    /// The message being reassembled by `recv`.
    partial: Vec<u8>,
    max_message_len: u64,
}

/// A connection whose setup succeeded.
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    pub(crate) tls: Option<Connection>,
}

impl Link {
    /// Starts the reader and writer threads of link `index` (0: next party, 1: previous).
    pub(crate) fn start(
        hub: &Arc<Hub>,
        index: usize,
        connected: Connected,
        config: &LinkConfig,
    ) -> Result<Link, TransportError> {
        let shared = hub.links[index].clone();
        let peer = shared.peer;
        let io_err = |e| TransportError::from_io(peer, e, None);
        let Connected { stream, tls } = connected;
        let heartbeat = config
            .recv_timeout
            .map(|t| (t / 8).max(Duration::from_millis(5)));
        let poll = heartbeat.map_or(POLL, |h| h.min(POLL));
        stream.set_read_timeout(Some(poll)).map_err(io_err)?;
        stream.set_write_timeout(Some(poll)).map_err(io_err)?;
        let tls = tls.map(|mut conn| {
            // Records are drained right after each write, so no need to cap the send buffer.
            conn.set_buffer_limit(None);
            Arc::new(Mutex::new(conn))
        });
        let reader = Reader {
            index,
            peer,
            stream: stream.try_clone().map_err(io_err)?,
            tls: tls.clone(),
            hub: hub.clone(),
            shared: shared.clone(),
            decoder: FrameDecoder::new(peer, config.max_frame_len),
            stall_after: config.recv_timeout.map(|t| t / 2),
            poll,
            queue_limit: config.queue_limit,
            goodbye: false,
            in_message: false,
        };
        let (to_writer, commands) = mpsc::channel();
        let writer = Writer {
            index,
            peer,
            stream,
            tls,
            hub: hub.clone(),
            shared: shared.clone(),
            commands,
            frame_len: usize::try_from(config.max_frame_len)
                .unwrap_or(usize::MAX)
                .clamp(1, DATA_FRAME),
            heartbeat,
            poll,
            records: Vec::new(),
        };
        let spawn_err = |source| TransportError::LocalIo {
            context: "spawning a link thread".to_string(),
            source,
        };
        thread::Builder::new()
            .name(format!("cryptgpu-read-{peer}"))
            .spawn(move || reader.run())
            .map_err(spawn_err)?;
        thread::Builder::new()
            .name(format!("cryptgpu-write-{peer}"))
            .spawn(move || writer.run())
            .map_err(spawn_err)?;
        Ok(Link {
            index,
            shared,
            hub: hub.clone(),
            to_writer,
            partial: Vec::new(),
            max_message_len: config.max_message_len,
        })
    }

    pub(crate) fn peer(&self) -> PartyId {
        self.shared.peer
    }

    /// Queues `msg` for the writer thread.
    pub(crate) fn send(&mut self, msg: Vec<u8>) -> Result<(), TransportError> {
        let peer = self.peer();
        if let Some(e) = self.hub.failure_elsewhere(self.index) {
            return Err(e);
        }
        if msg.len() as u64 > self.max_message_len {
            return Err(TransportError::MessageTooLarge {
                peer,
                len: msg.len() as u64,
                max: self.max_message_len,
            });
        }
        if self.shared.peer_done.load(Ordering::SeqCst) {
            // The peer finished while this party still had a message for it.
            let error = TransportError::Disconnected { peer };
            self.hub.link_failed(self.index, error.duplicate());
            return Err(error);
        }
        if self.shared.abort_requested.load(Ordering::SeqCst)
            || self.to_writer.send(WriterCmd::Message(msg)).is_err()
        {
            // The writer stopped: the link ended, and says why.
            return Err(match &lock(&self.shared.inbox).end {
                Some(e) => e.duplicate(),
                None => TransportError::ConnectionLost { peer },
            });
        }
        Ok(())
    }

    /// Receives the next message, waiting at most `timeout` for it.
    pub(crate) fn recv(&mut self, timeout: Option<Duration>) -> Result<Vec<u8>, TransportError> {
        let result = self.recv_inner(timeout);
        if let Err(e) = &result {
            self.partial = Vec::new();
            // Any failed receive ends the job: make sure both neighbours hear of it (a peer
            // that said goodbye while a message was still expected from it is told as a
            // connection lost).
            if !self.hub.failed() {
                self.hub.link_failed(self.index, e.duplicate());
            }
        }
        result
    }

    /// The timeout counts only time this process was running ([`AwakeTimer`]): a party
    /// stopped and resumed first takes what arrived meanwhile.
    fn recv_inner(&mut self, timeout: Option<Duration>) -> Result<Vec<u8>, TransportError> {
        let peer = self.peer();
        let mut waited = AwakeTimer::new(POLL, Instant::now());
        let mut inbox = lock(&self.shared.inbox);
        loop {
            if let Some(e) = self.hub.failure_elsewhere(self.index) {
                return Err(e);
            }
            if let Some((payload, end)) = inbox.frames.pop_front() {
                inbox.bytes -= payload.len();
                self.shared.space.notify_all();
                let total = self.partial.len() as u64 + payload.len() as u64;
                if total > self.max_message_len {
                    return Err(TransportError::MessageTooLarge {
                        peer,
                        len: total,
                        max: self.max_message_len,
                    });
                }
                if self.partial.is_empty() {
                    self.partial = payload;
                } else {
                    self.partial.extend_from_slice(&payload);
                }
                if end {
                    return Ok(std::mem::take(&mut self.partial));
                }
                continue;
            }
            if let Some(e) = &inbox.end {
                return Err(e.duplicate());
            }
            let wait = match timeout {
                None => POLL,
                Some(after) => match after.checked_sub(waited.observe(Instant::now())) {
                    Some(left) if !left.is_zero() => left.min(POLL),
                    _ => return Err(TransportError::Timeout { peer, after }),
                },
            };
            inbox = wait_on(&self.shared.ready, inbox, wait);
        }
    }

    /// Asks the writer to say goodbye once it has sent what is queued.
    pub(crate) fn say_goodbye(&self) {
        let _ = self.to_writer.send(WriterCmd::Goodbye);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.owner_gone.store(true, Ordering::SeqCst);
        self.shared.wake();
    }
}

/// The reader thread of one link.
struct Reader {
    index: usize,
    peer: PartyId,
    stream: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
    hub: Arc<Hub>,
    shared: Arc<LinkShared>,
    decoder: FrameDecoder,
    /// A peer silent (no byte at all) for this long is stalled.
    stall_after: Option<Duration>,
    /// The longest a read waits before the loop looks at its flags.
    poll: Duration,
    queue_limit: usize,
    /// The peer said goodbye.
    goodbye: bool,
    /// Part of a message has arrived, not its end.
    in_message: bool,
}

/// How the reader's loop goes on.
enum Step {
    Continue,
    /// The link ended (cleanly or not); drain until EOF or the linger time, then stop.
    Ended,
}

impl Reader {
    fn run(mut self) {
        let mut buf = vec![0u8; 64 << 10];
        let mut plain = Vec::new();
        let mut frames = Vec::new();
        // The peer's silence, counted in time this process was running.
        let mut silence = AwakeTimer::new(self.poll, Instant::now());
        let mut ended = false;
        let mut ended_at: Option<Instant> = None;

        // With TLS, plaintext may already sit in the connection from the setup reads.
        if let Some(conn) = &self.tls {
            let drained = drain_plaintext(&mut lock(conn), &mut plain);
            match drained {
                Ok(_) => {
                    if let Step::Ended = self.consume(&plain, &mut frames, &mut silence) {
                        ended = true;
                    }
                }
                Err(e) => {
                    self.fail(TransportError::from_io(self.peer, e, None));
                    ended = true;
                }
            }
            plain.clear();
        }

        loop {
            if self.shared.killed() {
                break;
            }
            if ended || self.shared.owner_gone.load(Ordering::SeqCst) {
                let since = *ended_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= LINGER {
                    break;
                }
            }
            let n = match (&self.stream).read(&mut buf) {
                Ok(n) => n,
                Err(e) if woke_up(&e) => {
                    // A peer that said goodbye is done, not stalled. The silence counts only
                    // time this process ran: resumed after a stop, the party reads what came
                    // meanwhile (the peers' aborts naming it) before it blames anyone.
                    let silent_for = silence.observe(Instant::now());
                    if !ended
                        && !self.goodbye
                        && let Some(limit) = self.stall_after
                        && silent_for >= limit
                    {
                        self.fail(TransportError::Stalled {
                            peer: self.peer,
                            after: limit,
                        });
                        ended = true;
                    }
                    continue;
                }
                Err(e) => {
                    if !ended {
                        self.end_of_stream(Some(e));
                    }
                    break;
                }
            };
            if n == 0 {
                if !ended {
                    self.end_of_stream(None);
                }
                break;
            }
            silence.reset(Instant::now());
            if ended {
                continue; // draining
            }
            let mut closed = false;
            if let Some(conn) = &self.tls {
                let mut conn = lock(conn);
                let mut data = &buf[..n];
                while !data.is_empty() {
                    let step = conn
                        .read_tls(&mut data)
                        .and_then(|_| {
                            conn.process_new_packets()
                                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                        })
                        .and_then(|_| drain_plaintext(&mut conn, &mut plain));
                    match step {
                        Ok(true) => {
                            closed = true;
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            drop(conn);
                            // What decrypted before the error is still delivered.
                            let _ = self.consume(&plain, &mut frames, &mut silence);
                            self.fail(TransportError::from_io(self.peer, e, None));
                            ended = true;
                            break;
                        }
                    }
                }
            } else {
                plain.extend_from_slice(&buf[..n]);
            }
            if !ended && let Step::Ended = self.consume(&plain, &mut frames, &mut silence) {
                ended = true;
            }
            plain.clear();
            if closed && !ended {
                self.end_of_stream(None);
                ended = true;
            }
        }
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    /// Decodes `plain` and acts on each frame.
    fn consume(&mut self, plain: &[u8], frames: &mut Vec<Frame>, silence: &mut AwakeTimer) -> Step {
        let fed = self.decoder.feed(plain, frames);
        for frame in frames.drain(..) {
            if let Step::Ended = self.on_frame(frame, silence) {
                return Step::Ended;
            }
        }
        match fed {
            Ok(()) => Step::Continue,
            Err(e) => {
                self.fail(e);
                Step::Ended
            }
        }
    }

    fn on_frame(&mut self, frame: Frame, silence: &mut AwakeTimer) -> Step {
        let malformed = |reason: &str| TransportError::Malformed {
            peer: self.peer,
            reason: reason.to_string(),
        };
        match frame.kind {
            FrameKind::Data | FrameKind::DataEnd => {
                if self.goodbye {
                    self.fail(malformed("data after its goodbye"));
                    return Step::Ended;
                }
                let end = frame.kind == FrameKind::DataEnd;
                self.in_message = !end;
                if !self.push(frame.payload, end) {
                    return Step::Ended;
                }
                // Waiting for room is not the peer's silence.
                silence.reset(Instant::now());
                Step::Continue
            }
            FrameKind::Heartbeat => Step::Continue,
            FrameKind::Goodbye => {
                if self.in_message {
                    self.fail(malformed("a goodbye in the middle of a message"));
                    return Step::Ended;
                }
                self.goodbye = true;
                self.shared.peer_done.store(true, Ordering::SeqCst);
                Step::Continue
            }
            FrameKind::Abort => {
                let error = match parse_abort(self.peer, &frame.payload) {
                    Ok((culprit, kind)) => TransportError::PeerFailed {
                        peer: culprit,
                        reported_by: (culprit != self.peer).then_some(self.peer),
                        kind,
                    },
                    Err(e) => e,
                };
                self.fail(error);
                Step::Ended
            }
        }
    }

    /// Queues a data frame, waiting while the inbox is full; false if the link is being
    /// torn down meanwhile.
    fn push(&self, payload: Vec<u8>, end: bool) -> bool {
        let mut inbox = lock(&self.shared.inbox);
        while !inbox.frames.is_empty() && inbox.bytes + payload.len() > self.queue_limit {
            if self.shared.killed() || self.shared.owner_gone.load(Ordering::SeqCst) {
                return false;
            }
            inbox = wait_on(&self.shared.space, inbox, POLL);
        }
        inbox.bytes += payload.len();
        inbox.frames.push_back((payload, end));
        drop(inbox);
        self.shared.ready.notify_all();
        true
    }

    /// The stream ended (EOF, a clean TLS close, or a socket error): cleanly after a
    /// goodbye between messages, else a failure.
    fn end_of_stream(&mut self, error: Option<io::Error>) {
        if let Some(truncated) = self.decoder.truncation() {
            self.fail(truncated);
            return;
        }
        let lost = match error {
            None => TransportError::ConnectionLost { peer: self.peer },
            Some(e) => TransportError::from_io(self.peer, e, None),
        };
        if self.goodbye && matches!(lost, TransportError::ConnectionLost { .. }) {
            self.shared
                .set_end(TransportError::Disconnected { peer: self.peer });
        } else {
            self.fail(lost);
        }
    }

    fn fail(&self, error: TransportError) {
        self.hub.link_failed(self.index, error);
    }
}

/// Moves all decrypted plaintext into `out`; returns whether the peer closed the TLS session
/// (`close_notify`).
pub(crate) fn drain_plaintext(conn: &mut Connection, out: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 << 10];
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// The writer thread of one link.
struct Writer {
    index: usize,
    peer: PartyId,
    stream: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
    hub: Arc<Hub>,
    shared: Arc<LinkShared>,
    commands: Receiver<WriterCmd>,
    /// Payload bytes per data frame.
    frame_len: usize,
    heartbeat: Option<Duration>,
    poll: Duration,
    /// TLS records waiting to be written.
    records: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        let result = self.serve();
        // After the peer's goodbye a failed write only means it closed its end.
        if let Err(e) = result
            && !self.shared.killed()
            && !self.shared.peer_done.load(Ordering::SeqCst)
        {
            // The peer closed or reset the connection. What it sent before (an abort naming
            // the party to blame, maybe this one) is for the reader to find: give it a moment
            // before reporting the lost connection from this side.
            let until = Instant::now() + WRITE_FAILURE_GRACE;
            while !self.hub.failed() && !self.shared.killed() && Instant::now() < until {
                thread::sleep(Duration::from_millis(10));
            }
            self.hub
                .link_failed(self.index, TransportError::from_io(self.peer, e, None));
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        *lock(&self.shared.writer_done) = true;
        self.shared.writer_done_cv.notify_all();
    }

    /// Sends messages, heartbeats and at last a goodbye or an abort.
    fn serve(&mut self) -> io::Result<()> {
        let mut last_write = Instant::now();
        loop {
            if self.shared.abort_requested.load(Ordering::SeqCst) {
                return self.send_abort();
            }
            if self.shared.killed() {
                return Ok(());
            }
            match self.commands.recv_timeout(self.poll) {
                Ok(WriterCmd::Message(msg)) => {
                    let mut pieces = msg.chunks(self.frame_len).peekable();
                    if msg.is_empty() {
                        self.write_frame(FrameKind::DataEnd, &[])?;
                    }
                    while let Some(piece) = pieces.next() {
                        if self.shared.abort_requested.load(Ordering::SeqCst) {
                            return self.send_abort();
                        }
                        let kind = if pieces.peek().is_some() {
                            FrameKind::Data
                        } else {
                            FrameKind::DataEnd
                        };
                        self.write_frame(kind, piece)?;
                    }
                    last_write = Instant::now();
                }
                Ok(WriterCmd::Goodbye) => {
                    self.write_frame(FrameKind::Goodbye, &[])?;
                    return self.close_tls();
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(every) = self.heartbeat
                        && !self.shared.peer_done.load(Ordering::SeqCst)
                        && last_write.elapsed() >= every
                    {
                        self.write_frame(FrameKind::Heartbeat, &[])?;
                        last_write = Instant::now();
                    }
                }
                // The owner is gone without a goodbye: nothing more to send.
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }

    fn send_abort(&mut self) -> io::Result<()> {
        let taken = *lock(&self.shared.abort);
        if let Some((culprit, kind)) = taken {
            self.write_frame(FrameKind::Abort, &abort_payload(culprit, kind))?;
        }
        self.close_tls()
    }

    fn close_tls(&mut self) -> io::Result<()> {
        if let Some(conn) = &self.tls {
            {
                let mut conn = lock(conn);
                conn.send_close_notify();
                while conn.wants_write() {
                    conn.write_tls(&mut self.records)?;
                }
            }
            self.write_records()?;
        }
        Ok(())
    }

    fn write_frame(&mut self, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
        let head = header(kind, payload.len());
        match &self.tls {
            None => {
                write_polled(&self.stream, &self.shared, &head)?;
                write_polled(&self.stream, &self.shared, payload)
            }
            Some(conn) => {
                {
                    let mut conn = lock(conn);
                    conn.writer().write_all(&head)?;
                    conn.writer().write_all(payload)?;
                    while conn.wants_write() {
                        conn.write_tls(&mut self.records)?;
                    }
                }
                // The socket write happens without the lock, so the reader keeps decrypting
                // the other direction while this blocks.
                self.write_records()
            }
        }
    }

    fn write_records(&mut self) -> io::Result<()> {
        let result = write_polled(&self.stream, &self.shared, &self.records);
        self.records.clear();
        result
    }
}

/// Whether a socket call returned only because its poll interval passed (or a signal came):
/// nothing happened, try again.
fn woke_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Writes all of `buf`, waking every poll interval to see whether the link was killed (a
/// peer that stopped reading would otherwise block the writer forever).
fn write_polled(stream: &TcpStream, shared: &LinkShared, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match (&*stream).write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if woke_up(&e) => {
                if shared.killed() {
                    return Err(io::Error::other("the link was stopped"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits on `condvar` for at most `timeout` and takes the lock back, even from a thread
/// that panicked holding it (the state it guards stays consistent between statements).
fn wait_on<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    condvar
        .wait_timeout(guard, timeout)
        .map(|(g, _)| g)
        .unwrap_or_else(|poisoned| poisoned.into_inner().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awake_time_counts_regular_looks_in_full() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(100);
        let mut timer = AwakeTimer::new(tick, t0);
        for i in 1..=5u32 {
            assert_eq!(timer.observe(t0 + tick * i), tick * i);
        }
        // A late wake-up within the slack still counts in full.
        let late = tick * 5 + tick + SCHEDULING_SLACK;
        assert_eq!(timer.observe(t0 + late), late);
        timer.reset(t0 + late);
        assert_eq!(timer.observe(t0 + late), Duration::ZERO);
    }

    #[test]
    fn a_jump_of_the_clock_is_not_held_against_the_peer() {
        // The loop looks every 100 ms; the process is then stopped for 60 s. A peer silent
        // for a stall limit of 400 ms of running time is not stalled when we wake up; it is
        // after 400 ms more of silence.
        let t0 = Instant::now();
        let tick = Duration::from_millis(100);
        let limit = Duration::from_millis(400);
        let mut timer = AwakeTimer::new(tick, t0);
        assert_eq!(timer.observe(t0 + tick), tick);
        let resumed = t0 + tick + Duration::from_secs(60);
        let after_stop = timer.observe(resumed);
        assert!(after_stop < limit, "{after_stop:?}");
        assert_eq!(after_stop, tick + tick + SCHEDULING_SLACK);
        let mut now = resumed;
        let mut looks = 0;
        while timer.observe(now) < limit {
            now += tick;
            looks += 1;
        }
        assert!((1..=3).contains(&looks), "{looks}");
        // A clock that does not move, or looks out of order, add nothing.
        let mut timer = AwakeTimer::new(tick, t0 + tick);
        assert_eq!(timer.observe(t0), Duration::ZERO);
        assert_eq!(timer.observe(t0 + tick), Duration::ZERO);
    }
}
