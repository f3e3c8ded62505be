//! One server's queue of queries: filled by the client connections, emptied by the
//! server's engine a batch at a time, bounded in examples and in queries per client; and
//! the service's state (serving, down, stopping) that the connections answer from.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::wire::{Answer, ErrorKind, ServiceDescription};

/// A query as the servers name it: its client and the client's id for it.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct QueryKey {
    /// The client's name (checked against its certificate).
    pub client: String,
    /// The client's id of the query.
    pub id: String,
}

impl std::fmt::Display for QueryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.client, self.id)
    }
}

/// A query as P0 proposes it for a batch: what all three servers must hold alike.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposed {
    /// Its name.
    pub key: QueryKey,
    /// Its examples.
    pub examples: usize,
    /// What it asks for.
    pub answer: Answer,
    /// How long it has waited at P0, in milliseconds: a follower waits for an absent
    /// query only until it is as old as the grace allows.
    pub waited_ms: u64,
}

/// What a query gets back from the engine.
#[derive(Debug)]
pub enum Outcome {
    /// This server's share of the result.
    Done {
        /// The batch it ran in.
        batch: u64,
        /// Examples in that batch.
        batch_examples: usize,
        /// `[examples, width]`.
        shape: Vec<usize>,
        /// The share (a fresh 3-out-of-3 sharing of the result).
        share: Vec<u64>,
    },
    /// It failed, with a reason fit for the client.
    Failed(ErrorKind, String),
}

/// A query waiting for a batch.
#[derive(Debug)]
pub struct Pending {
    /// Its name.
    pub key: QueryKey,
    /// Examples.
    pub examples: usize,
    /// What to reveal.
    pub answer: Answer,
    /// This server's two shares of the input: x_i, then x_{i+1}.
    pub own: Vec<u64>,
    /// x_{i+1}.
    pub next: Vec<u64>,
    /// When it arrived.
    pub arrived: Instant,
    /// Where its outcome goes.
    pub reply: mpsc::Sender<Outcome>,
}

/// The service's state, as a client connection sees it.
#[derive(Clone, Debug)]
pub enum Status {
    /// Setting up, or one of the servers is down: the reason in words.
    Down(String),
    /// Serving.
    Serving(ServiceDescription),
    /// Stopping for good.
    Stopping,
}

/// The limits a queue enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Examples queued at most.
    pub queue_examples: usize,
    /// Queries in flight per client at most.
    pub per_client: usize,
}

struct Inner {
    status: Status,
    queue: VecDeque<Pending>,
    queued_examples: usize,
    per_client: HashMap<String, usize>,
}

/// One server's queue and state (shared by its connections and its engine).
pub struct Queue {
    inner: Mutex<Inner>,
    changed: Condvar,
    limits: Limits,
}

impl Queue {
    /// An empty queue, down until the engine says it serves.
    pub fn new(limits: Limits) -> Queue {
        Queue {
            inner: Mutex::new(Inner {
                status: Status::Down("the servers are setting up".into()),
                queue: VecDeque::new(),
                queued_examples: 0,
                per_client: HashMap::new(),
            }),
            changed: Condvar::new(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now.
    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    /// Sets the state; when it is not `Serving`, every queued query fails with a reason
    /// that says so.
    pub fn set_status(&self, status: Status) {
        let mut inner = self.lock();
        let failure = match &status {
            Status::Serving(_) => None,
            Status::Down(why) => Some((ErrorKind::Unavailable, why.clone())),
            Status::Stopping => Some((ErrorKind::ShuttingDown, "the server is stopping".into())),
        };
        inner.status = status;
        if let Some((kind, why)) = failure {
            let all: Vec<Pending> = inner.queue.drain(..).collect();
            inner.queued_examples = 0;
            inner.per_client.clear();
            drop(inner);
            for p in all {
                let _ = p.reply.send(Outcome::Failed(kind, why.clone()));
            }
        }
        self.changed.notify_all();
    }

    /// Queues a query, or says why not (busy, a repeated id, not serving).
    pub fn submit(&self, query: Pending) -> Result<(), (ErrorKind, String)> {
        let mut inner = self.lock();
        match &inner.status {
            Status::Serving(_) => {}
            Status::Down(why) => return Err((ErrorKind::Unavailable, why.clone())),
            Status::Stopping => {
                return Err((ErrorKind::ShuttingDown, "the server is stopping".into()));
            }
        }
        let in_flight = inner
            .per_client
            .get(&query.key.client)
            .copied()
            .unwrap_or(0);
        if in_flight >= self.limits.per_client {
            return Err((
                ErrorKind::Busy,
                format!(
                    "client {} already has {in_flight} queries in flight (at most {})",
                    query.key.client, self.limits.per_client
                ),
            ));
        }
        if inner.queued_examples + query.examples > self.limits.queue_examples {
            return Err((
                ErrorKind::Busy,
                format!(
                    "the queue is full ({} examples waiting, at most {})",
                    inner.queued_examples, self.limits.queue_examples
                ),
            ));
        }
        if inner.queue.iter().any(|p| p.key == query.key) {
            return Err((
                ErrorKind::Malformed,
                format!("query id {} is already queued", query.key.id),
            ));
        }
        inner.queued_examples += query.examples;
        *inner
            .per_client
            .entry(query.key.client.clone())
            .or_default() += 1;
        inner.queue.push_back(query);
        drop(inner);
        self.changed.notify_all();
        Ok(())
    }

    /// The oldest queries, up to `max_examples` examples in all, once there is one and
    /// either the batch is full or `wait` has passed both since the oldest arrived and
    /// since `gather_from` (the end of the previous batch, whose clients send their next
    /// queries at once); an empty list after `idle` without any query (or when the state
    /// changes).
    pub fn next_batch(
        &self,
        max_examples: usize,
        wait: Duration,
        gather_from: Instant,
        idle: Duration,
    ) -> Vec<Proposed> {
        let start = Instant::now();
        let mut inner = self.lock();
        loop {
            if !matches!(inner.status, Status::Serving(_)) {
                return Vec::new();
            }
            if let Some(first) = inner.queue.front() {
                let deadline = first.arrived.max(gather_from) + wait;
                let now = Instant::now();
                if inner.queued_examples >= max_examples || now >= deadline {
                    let mut keys = Vec::new();
                    let mut examples = 0;
                    for p in &inner.queue {
                        if examples + p.examples > max_examples {
                            break;
                        }
                        examples += p.examples;
                        keys.push(Proposed {
                            key: p.key.clone(),
                            examples: p.examples,
                            answer: p.answer,
                            waited_ms: p.arrived.elapsed().as_millis() as u64,
                        });
                    }
                    return keys;
                }
                inner = self
                    .changed
                    .wait_timeout(inner, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            } else {
                let Some(left) = idle.checked_sub(start.elapsed()) else {
                    return Vec::new();
                };
                inner = self
                    .changed
                    .wait_timeout(inner, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }

    /// Which of `proposed` are not here alike: absent (after waiting up to `grace` for
    /// them to arrive), or here with other examples or another answer (at once: those will
    /// never match).
    pub fn missing(&self, proposed: &[Proposed], grace: Duration) -> Vec<QueryKey> {
        let oldest = proposed.iter().map(|q| q.waited_ms).max().unwrap_or(0);
        let deadline = Instant::now() + grace.saturating_sub(Duration::from_millis(oldest));
        let mut inner = self.lock();
        loop {
            let mut absent = Vec::new();
            let mut different = Vec::new();
            for q in proposed {
                match inner.queue.iter().find(|p| p.key == q.key) {
                    None => absent.push(q.key.clone()),
                    Some(p) if p.examples != q.examples || p.answer != q.answer => {
                        different.push(q.key.clone())
                    }
                    Some(_) => {}
                }
            }
            let now = Instant::now();
            if absent.is_empty() || now >= deadline {
                absent.extend(different);
                return absent;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Takes `keys` out of the queue, in that order (all must be here: the engine asked).
    pub fn take(&self, keys: &[QueryKey]) -> Vec<Pending> {
        let mut inner = self.lock();
        let mut taken = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(at) = inner.queue.iter().position(|p| &p.key == key)
                && let Some(p) = inner.queue.remove(at)
            {
                release(&mut inner, &p);
                taken.push(p);
            }
        }
        taken
    }

    /// Fails the queries that have waited longer than `timeout` (they did not reach all
    /// three servers in time, or the service is overloaded).
    pub fn expire(&self, timeout: Duration) {
        let mut inner = self.lock();
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(inner.queue.len());
        for p in std::mem::take(&mut inner.queue) {
            if p.arrived.elapsed() > timeout {
                expired.push(p);
            } else {
                kept.push_back(p);
            }
        }
        inner.queue = kept;
        for p in &expired {
            release(&mut inner, p);
        }
        drop(inner);
        for p in expired {
            let _ = p.reply.send(Outcome::Failed(
                ErrorKind::Timeout,
                format!(
                    "query {} was not run within {timeout:?}: it did not reach all three \
                     servers, or they are overloaded",
                    p.key.id
                ),
            ));
        }
    }

    /// How long the query `key` has waited, if it is here.
    pub fn age(&self, key: &QueryKey) -> Option<Duration> {
        let inner = self.lock();
        inner
            .queue
            .iter()
            .find(|p| &p.key == key)
            .map(|p| p.arrived.elapsed())
    }

    /// Queries and examples waiting now.
    pub fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.queue.len(), inner.queued_examples)
    }
}

fn release(inner: &mut Inner, p: &Pending) {
    inner.queued_examples -= p.examples;
    if let Some(n) = inner.per_client.get_mut(&p.key.client) {
        *n -= 1;
        if *n == 0 {
            inner.per_client.remove(&p.key.client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(client: &str, id: &str, examples: usize) -> (Pending, mpsc::Receiver<Outcome>) {
        let (tx, rx) = mpsc::channel();
        (
            Pending {
                key: QueryKey {
                    client: client.into(),
                    id: id.into(),
                },
                examples,
                answer: Answer::Class,
                own: vec![0; examples],
                next: vec![0; examples],
                arrived: Instant::now(),
                reply: tx,
            },
            rx,
        )
    }

    fn serving() -> Status {
        Status::Serving(ServiceDescription {
            server: 0,
            session: "s".into(),
            model: "m".into(),
            input_shape: vec![1],
            classes: 2,
            frac_bits: 16,
            max_query_examples: 8,
            answers: Answer::ALL.to_vec(),
            normalization: None,
        })
    }

    #[test]
    fn limits_batches_and_failures() {
        let q = Queue::new(Limits {
            queue_examples: 10,
            per_client: 2,
        });
        let (a, _ra) = pending("c0", "1", 4);
        assert_eq!(q.submit(a).unwrap_err().0, ErrorKind::Unavailable);
        q.set_status(serving());
        let (a, _ra) = pending("c0", "1", 4);
        q.submit(a).unwrap();
        let (dup, _) = pending("c0", "1", 1);
        assert_eq!(q.submit(dup).unwrap_err().0, ErrorKind::Malformed);
        let (b, _rb) = pending("c0", "2", 4);
        q.submit(b).unwrap();
        let (c, _) = pending("c0", "3", 1);
        let (kind, why) = q.submit(c).unwrap_err();
        assert_eq!(kind, ErrorKind::Busy);
        assert!(why.contains("2 queries in flight"), "{why}");
        let (d, rd) = pending("c1", "1", 4);
        assert_eq!(q.submit(d).unwrap_err().0, ErrorKind::Busy);
        let (d, rd2) = pending("c1", "1", 2);
        q.submit(d).unwrap();
        drop(rd);
        // A full batch goes at once; a batch stops before a query that would overflow it.
        let keys = q.next_batch(
            6,
            Duration::from_secs(10),
            Instant::now(),
            Duration::from_secs(1),
        );
        assert_eq!(keys.len(), 1);
        let keys = q.next_batch(
            10,
            Duration::from_secs(10),
            Instant::now(),
            Duration::from_secs(1),
        );
        assert_eq!(keys.len(), 3);
        let mut other = keys[1].clone();
        other.answer = Answer::Logits;
        let absent = Proposed {
            key: QueryKey {
                client: "c9".into(),
                id: "1".into(),
            },
            examples: 1,
            answer: Answer::Class,
            waited_ms: 0,
        };
        let missing = q.missing(&[keys[0].clone(), other, absent], Duration::from_millis(10));
        assert_eq!(missing.len(), 2);
        let taken = q.take(&[keys[0].key.clone()]);
        assert_eq!(taken.len(), 1);
        assert_eq!(q.len(), (2, 6));
        q.set_status(Status::Down("P2 stopped".into()));
        match rd2.recv().unwrap() {
            Outcome::Failed(ErrorKind::Unavailable, why) => assert_eq!(why, "P2 stopped"),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.len(), (0, 0));
    }

    #[test]
    fn old_queries_expire_and_idle_batches_are_empty() {
        let q = Queue::new(Limits {
            queue_examples: 10,
            per_client: 2,
        });
        q.set_status(serving());
        assert!(
            q.next_batch(4, Duration::ZERO, Instant::now(), Duration::from_millis(10))
                .is_empty()
        );
        let (a, ra) = pending("c0", "1", 1);
        q.submit(a).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        q.expire(Duration::from_millis(5));
        assert!(matches!(
            ra.recv().unwrap(),
            Outcome::Failed(ErrorKind::Timeout, _)
        ));
        assert_eq!(q.len(), (0, 0));
    }
}
