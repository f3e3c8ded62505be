//! Tensor buffers and the pool that recycles them.
//!
//! A protocol step makes many short-lived tensors of the same few sizes. Freshly
//! allocated large buffers come from `mmap`, and every first write to one of their pages
//! traps into the kernel, which zeroes the page before handing it over; freeing them
//! `munmap`s the pages again. Profiles of private inference put about a quarter of the
//! time there. So a freed buffer goes back to a process-wide pool, keyed by its length,
//! and the next op that needs a buffer of about that length takes it, pages already
//! mapped.
//!
//! The pool holds at most [`POOL_LIMIT_ENV`] MiB (default [`DEFAULT_POOL_MIB`]) of idle
//! buffers; what would go beyond is freed. A reused buffer holds the values of the tensor
//! it last belonged to: [`take`] is only for callers that write every element, and
//! [`take_zeroed`] for the rest.
//!
//! # Memory per party
//!
//! Three parties in one process share the pool, so the process's resident memory says
//! nothing of one party's. Every tensor buffer is charged to the device-memory ledger
//! ([`cryptgpu_backend::memory`]) when it becomes a tensor ([`Buffer::new`]), to the party
//! whose thread made it, until it is freed: what one party's process would hold in tensors,
//! without the pool's idle buffers and the kernels' scratch space. A buffer that would take
//! its party past the ledger's limit is refused there (and goes back to the pool).

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Mutex, OnceLock};

use cryptgpu_backend::Result;
use cryptgpu_backend::memory::{self, MemoryCharge};

/// Buffers shorter than this many words are left to the allocator: small allocations do
/// not go through `mmap`, so recycling them saves nothing.
const MIN_POOLED_WORDS: usize = 1 << 12;
/// A cached buffer serves a request of up to this fraction of its length shorter (1/8),
/// so that near sizes share buffers without wasting much memory.
const SLACK_SHIFT: u32 = 3;
/// The environment variable that sets the pool's limit in MiB (0 turns pooling off).
pub const POOL_LIMIT_ENV: &str = "CRYPTGPU_CPU_POOL_MIB";
/// The pool's default limit in MiB.
pub const DEFAULT_POOL_MIB: usize = 512;

/// The words of one tensor; goes back to the pool when dropped.
#[derive(Debug)]
pub(crate) struct Buffer {
    words: Vec<u64>,
    /// Its bytes in the ledger, given back when the buffer goes.
    _charge: MemoryCharge,
}

impl Buffer {
    /// Wraps `words` (from [`take`], [`take_zeroed`] or anywhere else), charging them to
    /// this thread's party in the ledger.
    ///
    /// # Errors
    /// [`cryptgpu_backend::BackendError::OutOfDeviceMemory`] where they would take the
    /// party past its limit; the words go back to the pool.
    pub(crate) fn new(words: Vec<u64>) -> Result<Self> {
        match memory::charge(8 * words.capacity() as u64) {
            Ok(charge) => Ok(Self {
                words,
                _charge: charge,
            }),
            Err(e) => {
                give(words);
                Err(e)
            }
        }
    }

    /// The words, leaving an empty buffer behind (nothing goes to the pool); their charge
    /// ends.
    pub(crate) fn into_vec(mut self) -> Vec<u64> {
        std::mem::take(&mut self.words)
    }
}

impl Deref for Buffer {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        &self.words
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.words));
    }
}

#[derive(Default)]
struct Pool {
    /// Idle buffers by length.
    idle: BTreeMap<usize, Vec<Vec<u64>>>,
    /// Total capacity of the idle buffers, in words.
    idle_words: usize,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(Mutex::default)
}

/// The pool's limit in words, read once from [`POOL_LIMIT_ENV`].
fn limit_words() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mib = match std::env::var(POOL_LIMIT_ENV) {
            Err(_) => DEFAULT_POOL_MIB,
            Ok(v) => v.trim().parse::<usize>().unwrap_or_else(|_| {
                eprintln!(
                    "warning: {POOL_LIMIT_ENV}={v:?} is not a whole number of MiB; the CPU \
                     backend keeps the default of {DEFAULT_POOL_MIB} MiB of idle buffers"
                );
                DEFAULT_POOL_MIB
            }),
        };
        mib.saturating_mul(1 << 20) / 8
    })
}

/// A buffer of `len` words whose contents are unspecified (zeros, or the values of a
/// freed tensor): for callers that overwrite every element.
pub(crate) fn take(len: usize) -> Vec<u64> {
    take_pooled(len).unwrap_or_else(|| fresh(len))
}

/// A new allocation of `len` zeros, counted as the device allocation it is.
fn fresh(len: usize) -> Vec<u64> {
    cryptgpu_backend::counters::record_allocation(8 * len as u64);
    vec![0; len]
}

/// A buffer of `len` zeros.
pub(crate) fn take_zeroed(len: usize) -> Vec<u64> {
    match take_pooled(len) {
        Some(mut words) => {
            words.fill(0);
            words
        }
        // Fresh pages are zero already.
        None => fresh(len),
    }
}

/// An idle buffer of `len` words or a little more (truncated to `len`), if the pool has
/// one.
fn take_pooled(len: usize) -> Option<Vec<u64>> {
    if len < MIN_POOLED_WORDS {
        return None;
    }
    let mut pool = pool().lock().unwrap_or_else(|e| e.into_inner());
    let key = *pool.idle.range(len..=len + (len >> SLACK_SHIFT)).next()?.0;
    let list = pool.idle.get_mut(&key).expect("a listed length");
    let mut words = list.pop().expect("the pool keeps no empty list");
    if list.is_empty() {
        pool.idle.remove(&key);
    }
    pool.idle_words -= words.capacity();
    drop(pool);
    words.truncate(len);
    Some(words)
}

/// A buffer holding a copy of `src`.
pub(crate) fn copy_of(src: &[u64]) -> Vec<u64> {
    let mut words = take(src.len());
    words.copy_from_slice(src);
    words
}

/// Returns a buffer to the pool, or frees it if the pool is full or it is small: for
/// kernels' scratch buffers (a tensor's buffer goes back when the tensor is dropped).
pub(crate) fn give(words: Vec<u64>) {
    if words.len() < MIN_POOLED_WORDS {
        return;
    }
    let limit = limit_words();
    let mut pool = pool().lock().unwrap_or_else(|e| e.into_inner());
    if pool.idle_words + words.capacity() > limit {
        return;
    }
    pool.idle_words += words.capacity();
    pool.idle.entry(words.len()).or_default().push(words);
}

/// Frees every idle buffer of the pool (their memory goes back to the system).
pub fn release_idle_buffers() {
    let idle = {
        let mut pool = pool().lock().unwrap_or_else(|e| e.into_inner());
        pool.idle_words = 0;
        std::mem::take(&mut pool.idle)
    };
    drop(idle);
}

/// The memory the pool holds in idle buffers, in bytes.
pub fn idle_buffer_bytes() -> usize {
    pool().lock().unwrap_or_else(|e| e.into_inner()).idle_words * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_buffer_serves_the_next_request_of_about_its_length() {
        let len = MIN_POOLED_WORDS * 8 + 17;
        let words = take_zeroed(len);
        let ptr = words.as_ptr();
        drop(Buffer::new(words).expect("no limit"));
        // A request 1/16 shorter reuses it, truncated; a longer one cannot.
        let again = take(len - len / 16);
        assert_eq!(again.len(), len - len / 16);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(take(len + 1).len(), len + 1);
        drop(Buffer::new(again).expect("no limit"));
        assert_eq!(take_zeroed(len - 3), vec![0; len - 3]);
    }

    #[test]
    fn tensors_are_charged_to_the_party_whose_thread_made_them() {
        std::thread::spawn(|| {
            memory::set_thread_party(Some(2));
            let before = memory::party_live_bytes()[2];
            let a = Buffer::new(vec![0; 1000]).expect("no limit");
            let b = Buffer::new(vec![0; 3000]).expect("no limit");
            assert!(memory::party_live_bytes()[2] >= before + 32_000);
            assert!(memory::party_peak_bytes()[2] >= before + 32_000);
            drop((a, b));
            let words = Buffer::new(vec![0; 500]).expect("no limit").into_vec();
            assert_eq!(words.len(), 500);
            assert_eq!(memory::party_live_bytes()[2], before);
            memory::set_thread_party(None);
        })
        .join()
        .expect("no panic");
    }

    #[test]
    fn small_buffers_bypass_the_pool() {
        // Tests on other threads pool buffers too: look for this length only, which no
        // other test uses, rather than at the pool's total.
        let len = MIN_POOLED_WORDS - 1;
        drop(Buffer::new(vec![1; len]).expect("no limit"));
        let pool = pool().lock().unwrap_or_else(|e| e.into_inner());
        assert!(pool.idle.get(&len).is_none_or(Vec::is_empty));
    }
}
