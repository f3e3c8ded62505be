//! The device-memory ledger: live and peak device bytes per party, process-wide, on every
//! backend, and an optional per-party limit, so a network that does not fit is refused with
//! the bytes it lacks before the device runs out.
//!
//! # Accounts
//! Four accounts: one per party (P0, P1, P2), and one for threads of no party. A thread says
//! which party it runs ([`set_thread_party`]: a job's party function does, on every thread
//! it runs on), and every device buffer a backend makes on that thread is charged to that
//! party's account ([`charge`]) until the buffer is freed, whichever thread frees it (a
//! tensor one party hands another stays charged to the party that made it). Three parties in
//! one process (the in-process jobs, the bench) are three accounts on one device; one party
//! per process (`cryptgpu party`) uses its own. [`party_peak_bytes`] is each party's peak of
//! live bytes since the last [`reset_party_peaks`]; [`party_live_bytes`] what each holds now.
//!
//! # What a backend charges
//! Every tensor buffer, on every backend: the CPU backend when a buffer becomes a tensor
//! (host memory is its device memory; the kernels' scratch buffers and the idle buffers of
//! its pool are not charged), the wgpu backend each storage buffer of a tensor and each
//! staging buffer of a download, the CUDA backend every allocation (tensors and an op's
//! scratch: im2col matrices, the GEMMs' limb planes). Small uniform buffers of parameters
//! are not charged. No secret is involved: only sizes.
//!
//! # The limit
//! [`set_party_limit`] caps every account (the no-party one included) at the same number of
//! bytes, process-wide: a charge that would take an account past it fails with
//! [`BackendError::OutOfDeviceMemory`] and charges nothing. The GPU backends charge before
//! asking the device, so it is never asked; the CPU backend when a buffer it filled becomes
//! a tensor (the buffer goes back to its pool). Without a limit (the default) a charge is
//! one atomic add (and a read of the peak).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::BackendError;

/// Accounts: one per party, and one for threads of no party.
const ACCOUNTS: usize = 4;
/// The account of threads that run no party.
const NO_PARTY: usize = 3;
/// The value of [`LIMIT`] that means no limit.
const UNLIMITED: u64 = u64::MAX;

static LIVE: [AtomicU64; ACCOUNTS] = [const { AtomicU64::new(0) }; ACCOUNTS];
static PEAK: [AtomicU64; ACCOUNTS] = [const { AtomicU64::new(0) }; ACCOUNTS];
static LIMIT: AtomicU64 = AtomicU64::new(UNLIMITED);

thread_local! {
    static PARTY: Cell<usize> = const { Cell::new(NO_PARTY) };
}

/// Charges the device buffers this thread makes from now on to party `party` (0, 1 or 2),
/// or to no party (`None`, the default; so is any other number).
pub fn set_thread_party(party: Option<usize>) {
    PARTY.set(party.filter(|&p| p < NO_PARTY).unwrap_or(NO_PARTY));
}

/// The party this thread's buffers are charged to ([`set_thread_party`]).
pub fn thread_party() -> Option<usize> {
    let account = PARTY.get();
    (account < NO_PARTY).then_some(account)
}

/// Each party's peak of live device bytes since the last [`reset_party_peaks`] (P0, P1, P2).
pub fn party_peak_bytes() -> [u64; 3] {
    std::array::from_fn(|i| PEAK[i].load(Ordering::Relaxed))
}

/// The device bytes each party holds now (P0, P1, P2).
pub fn party_live_bytes() -> [u64; 3] {
    std::array::from_fn(|i| LIVE[i].load(Ordering::Relaxed))
}

/// The device bytes the calling thread's account holds now.
pub fn thread_live_bytes() -> u64 {
    LIVE[PARTY.get()].load(Ordering::Relaxed)
}

/// Starts every account's peak again from its live bytes now.
pub fn reset_party_peaks() {
    for (peak, live) in PEAK.iter().zip(&LIVE) {
        peak.store(live.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Caps the device bytes each account may hold at `limit` from now on (`None`: no cap, the
/// default), process-wide. Buffers held already stay; only new charges are refused.
pub fn set_party_limit(limit: Option<u64>) {
    LIMIT.store(limit.unwrap_or(UNLIMITED), Ordering::Relaxed);
}

/// The cap [`set_party_limit`] set, if any.
pub fn party_limit() -> Option<u64> {
    let limit = LIMIT.load(Ordering::Relaxed);
    (limit != UNLIMITED).then_some(limit)
}

/// Bytes charged to an account: given back to that account when dropped, on any thread.
/// A buffer holds its charge for as long as it lives.
#[derive(Debug)]
#[must_use = "dropping a charge gives its bytes back at once"]
pub struct MemoryCharge {
    account: usize,
    bytes: u64,
}

impl MemoryCharge {
    /// The bytes charged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The party charged, if any.
    pub fn party(&self) -> Option<usize> {
        (self.account < NO_PARTY).then_some(self.account)
    }
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        LIVE[self.account].fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Charges `bytes` of a new device buffer to the calling thread's party; call it before
/// allocating, and keep the charge with the buffer.
///
/// # Errors
/// [`BackendError::OutOfDeviceMemory`] where the party's account would go past the limit
/// ([`set_party_limit`]); nothing is charged then.
pub fn charge(bytes: u64) -> Result<MemoryCharge, BackendError> {
    let account = PARTY.get();
    let limit = LIMIT.load(Ordering::Relaxed);
    let live = if limit == UNLIMITED {
        LIVE[account].fetch_add(bytes, Ordering::Relaxed) + bytes
    } else {
        let refuse = |live: u64| Shortfall {
            requested: bytes,
            live,
            limit,
            party: (account < NO_PARTY).then_some(account),
            by_driver: false,
        };
        let mut live = LIVE[account].load(Ordering::Relaxed);
        loop {
            let after = live
                .checked_add(bytes)
                .filter(|&after| after <= limit)
                .ok_or_else(|| BackendError::from(refuse(live)))?;
            match LIVE[account].compare_exchange_weak(
                live,
                after,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break after,
                Err(now) => live = now,
            }
        }
    };
    if live > PEAK[account].load(Ordering::Relaxed) {
        PEAK[account].fetch_max(live, Ordering::Relaxed);
    }
    Ok(MemoryCharge { account, bytes })
}

/// Why device memory ran out: the bytes asked for, what the party held, and the limit it
/// met. [`BackendError::OutOfDeviceMemory`] in one value; its `Display` is the sentence
/// that follows "does not fit: ".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Bytes of the buffer asked for.
    pub requested: u64,
    /// Bytes the party's account held when it asked.
    pub live: u64,
    /// The limit met: the ledger's per-party limit, or where the driver refused
    /// (`by_driver`), the device's total memory (0 if unknown).
    pub limit: u64,
    /// The party charged (`None`: a thread of no party).
    pub party: Option<usize>,
    /// Whether the device's driver refused the allocation (rather than the ledger's limit).
    pub by_driver: bool,
}

impl From<Shortfall> for BackendError {
    fn from(s: Shortfall) -> Self {
        BackendError::OutOfDeviceMemory(s)
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.party {
            Some(p) => format!("party P{p}"),
            None => "this thread (of no party)".to_string(),
        };
        let (requested, live) = (Bytes(self.requested), Bytes(self.live));
        match (self.by_driver, self.limit) {
            (false, limit) => write!(
                f,
                "{requested} more device memory needed, {who} already holds {live} of its {} \
                 limit",
                Bytes(limit)
            ),
            (true, 0) => write!(
                f,
                "{requested} more device memory needed and the driver ran out of device \
                 memory; {who} holds {live}"
            ),
            (true, total) => write!(
                f,
                "{requested} more device memory needed and the driver ran out of the device's \
                 {}; {who} holds {live}",
                Bytes(total)
            ),
        }
    }
}

/// A number of bytes in decimal units: `512 B`, `3.2 kB`, `25.7 MB`, `39.99 GB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        match self.0 {
            0..1_000 => write!(f, "{} B", self.0),
            1_000..1_000_000 => write!(f, "{:.1} kB", b / 1e3),
            1_000_000..1_000_000_000 => write!(f, "{:.1} MB", b / 1e6),
            1_000_000_000..1_000_000_000_000 => write!(f, "{:.2} GB", b / 1e9),
            _ => write!(f, "{:.2} TB", b / 1e12),
        }
    }
}

/// Parses a size: a number of bytes, or a number (decimals allowed) with a unit: `B`,
/// decimal `kB`, `MB`, `GB`, `TB` (also `K`, `M`, `G`, `T`), or binary `KiB`, `MiB`, `GiB`,
/// `TiB`, in any case: `40GB`, `512MiB`, `1.5 G`, `1000000`.
///
/// # Errors
/// A text that is not such a size, or one of more than `u64::MAX` bytes, in words.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let not_a_size = || format!("`{text}` is not a size such as 40GB, 512MiB or 1000000");
    if number.is_empty() {
        return Err(not_a_size());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(scale)
            .ok_or_else(|| format!("`{text}` is more than {} bytes", u64::MAX));
    }
    let value: f64 = number.parse().map_err(|_| not_a_size())?;
    let bytes = (value * scale as f64).round();
    if !(bytes.is_finite() && bytes < u64::MAX as f64) {
        return Err(format!("`{text}` is more than {} bytes", u64::MAX));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The limit is process-wide: the tests that set it take turns.
    static LIMIT_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn charges_go_to_the_thread_party_and_come_back_from_any_thread() {
        let _turn = LIMIT_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let charge = std::thread::spawn(|| {
            set_thread_party(Some(2));
            assert_eq!(thread_party(), Some(2));
            reset_party_peaks();
            let before = party_live_bytes()[2];
            let a = charge(1000).expect("no limit");
            let b = charge(3000).expect("no limit");
            assert_eq!(a.party(), Some(2));
            assert_eq!(party_live_bytes()[2], before + 4000);
            assert!(party_peak_bytes()[2] >= before + 4000);
            drop(a);
            assert_eq!(party_live_bytes()[2], before + 3000);
            set_thread_party(None);
            // Charged to P2 although this thread now runs no party.
            (b, before)
        })
        .join()
        .expect("no panic");
        let (b, before) = charge;
        assert_eq!(b.bytes(), 3000);
        // Released on this thread, to the account it was charged to.
        drop(b);
        assert_eq!(party_live_bytes()[2], before);
        assert!(party_peak_bytes()[2] >= before + 4000);
        std::thread::spawn(|| {
            set_thread_party(Some(2));
            reset_party_peaks();
            assert_eq!(party_peak_bytes()[2], party_live_bytes()[2]);
        })
        .join()
        .expect("no panic");
    }

    #[test]
    fn a_charge_past_the_limit_is_refused_with_the_bytes_and_charges_nothing() {
        let _turn = LIMIT_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        std::thread::spawn(|| {
            set_thread_party(Some(1));
            let held = party_live_bytes()[1];
            set_party_limit(Some(held + 10_000));
            assert_eq!(party_limit(), Some(held + 10_000));
            let first = charge(6_000).expect("fits");
            let refused = charge(5_000).expect_err("past the limit");
            set_party_limit(None);
            match refused {
                BackendError::OutOfDeviceMemory(Shortfall {
                    requested,
                    live,
                    limit,
                    party,
                    by_driver,
                }) => {
                    assert_eq!(requested, 5_000);
                    assert_eq!(live, held + 6_000);
                    assert_eq!(limit, held + 10_000);
                    assert_eq!(party, Some(1));
                    assert!(!by_driver);
                }
                other => panic!("expected OutOfDeviceMemory, got {other}"),
            }
            assert_eq!(party_live_bytes()[1], held + 6_000);
            drop(first);
            assert_eq!(party_live_bytes()[1], held);
            // Without the limit the same charge goes through.
            let again = charge(5_000).expect("no limit");
            drop(again);
        })
        .join()
        .expect("no panic");
    }

    #[test]
    fn concurrent_charges_never_pass_the_limit_together() {
        let _turn = LIMIT_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let held = std::thread::spawn(|| {
            set_thread_party(Some(0));
            party_live_bytes()[0]
        })
        .join()
        .expect("no panic");
        set_party_limit(Some(held + 1_000 * 100));
        let tried = std::sync::Arc::new(std::sync::Barrier::new(4));
        let granted: u64 = (0..4)
            .map(|_| {
                let tried = tried.clone();
                std::thread::spawn(move || {
                    set_thread_party(Some(0));
                    let kept: Vec<MemoryCharge> =
                        (0..100).filter_map(|_| charge(1_000).ok()).collect();
                    // Hold them until every thread has tried.
                    tried.wait();
                    kept.len() as u64
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("no panic"))
            .sum();
        set_party_limit(None);
        assert_eq!(granted, 100, "charges of 1 kB under a 100 kB limit");
    }

    #[test]
    fn the_message_names_the_party_and_the_sizes_in_human_units() {
        let text = BackendError::from(Shortfall {
            requested: 25_700_000,
            live: 39_990_000_000,
            limit: 40_000_000_000,
            party: Some(1),
            by_driver: false,
        })
        .to_string();
        assert_eq!(
            text,
            "a device buffer does not fit: 25.7 MB more device memory needed, party P1 \
             already holds 39.99 GB of its 40.00 GB limit"
        );
        let driver = Shortfall {
            requested: 512,
            live: 2_000,
            limit: 80_000_000_000,
            party: None,
            by_driver: true,
        }
        .to_string();
        assert!(driver.contains("512 B more"), "{driver}");
        assert!(driver.contains("driver ran out of the device's 80.00 GB"));
        assert!(driver.contains("of no party) holds 2.0 kB"));
    }

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_size("40GB"), Ok(40_000_000_000));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!(parse_size("1.5 g"), Ok(1_500_000_000));
        assert_eq!(parse_size("2kib"), Ok(2048));
        assert_eq!(parse_size(" 7 B "), Ok(7));
        assert!(parse_size("").is_err());
        assert!(parse_size("GB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("1.2.3GB").is_err());
        assert!(parse_size("20000000TiB").is_err());
        assert!(parse_size("-5MB").is_err());
    }
}
