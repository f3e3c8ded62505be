//! Counters of device work: what a backend did for the calling thread (kernel launches,
//! host↔device transfers and their bytes, host waits, device allocations), so the overhead
//! of a protocol round can be counted on every backend, the CPU included, and a change
//! that adds launches or copies shows in the bench JSON and fails a test.
//!
//! # Per thread, so per party
//! Every backend records into a counter of the thread that calls it ([`record`]), and
//! [`thread_counts`] reads the calling thread's. A party runs on one thread (three threads
//! in one process, or one process per host), so a party's counts are its thread's: take a
//! snapshot before a step and [`DeviceCounts::since`] after it.
//!
//! # What each backend counts
//! - `launches`: CUDA kernel launches and cuBLAS calls; wgpu compute dispatches; on the
//!   CPU, one per op that runs a pass over memory (a reshape is free everywhere).
//! - `uploads`/`downloads` and their bytes: tensors moved between host and device by
//!   [`GpuBackend::upload`](crate::GpuBackend::upload),
//!   [`GpuBackend::download`](crate::GpuBackend::download) and their `_vec` forms. On the
//!   CPU a transfer is a move of host memory (copied or not), counted so that a protocol's
//!   transfers read the same on every backend.
//! - `syncs`: waits of the host for the device ([`GpuBackend::sync`](crate::GpuBackend::sync),
//!   and each download on the GPU backends, which waits for the work before it).
//! - `allocations` and their bytes: device buffers obtained from the allocator; on the
//!   CPU, buffers its pool could not serve.
//!
//! These count work, per thread. What a party holds at a time (live and peak device bytes,
//! per party, whichever thread frees a buffer) is the device-memory ledger's
//! ([`crate::memory`]).

use std::cell::Cell;
use std::fmt;
use std::ops::Add;

/// A snapshot of device work counters (see the [module docs](self) for what each
/// backend counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeviceCounts {
    /// Kernel launches (or dispatches, or CPU passes).
    pub launches: u64,
    /// Host→device transfers.
    pub uploads: u64,
    /// Bytes of those transfers.
    pub upload_bytes: u64,
    /// Device→host transfers.
    pub downloads: u64,
    /// Bytes of those transfers.
    pub download_bytes: u64,
    /// Waits of the host for the device.
    pub syncs: u64,
    /// Device buffers allocated.
    pub allocations: u64,
    /// Bytes of those buffers.
    pub allocation_bytes: u64,
}

impl DeviceCounts {
    /// All zero.
    pub const ZERO: DeviceCounts = DeviceCounts {
        launches: 0,
        uploads: 0,
        upload_bytes: 0,
        downloads: 0,
        download_bytes: 0,
        syncs: 0,
        allocations: 0,
        allocation_bytes: 0,
    };

    /// The counts accumulated between `earlier` (a snapshot taken before) and this one.
    pub fn since(&self, earlier: &DeviceCounts) -> DeviceCounts {
        self.zip(earlier, u64::saturating_sub)
    }

    /// Host↔device transfers in both directions.
    pub fn transfers(&self) -> u64 {
        self.uploads + self.downloads
    }

    /// Bytes moved between host and device in both directions.
    pub fn transfer_bytes(&self) -> u64 {
        self.upload_bytes + self.download_bytes
    }

    /// The counters as `(name, value)` pairs, in a fixed order (for reports).
    pub fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("launches", self.launches),
            ("uploads", self.uploads),
            ("upload_bytes", self.upload_bytes),
            ("downloads", self.downloads),
            ("download_bytes", self.download_bytes),
            ("syncs", self.syncs),
            ("allocations", self.allocations),
            ("allocation_bytes", self.allocation_bytes),
        ]
    }

    fn zip(&self, other: &DeviceCounts, f: impl Fn(u64, u64) -> u64) -> DeviceCounts {
        DeviceCounts {
            launches: f(self.launches, other.launches),
            uploads: f(self.uploads, other.uploads),
            upload_bytes: f(self.upload_bytes, other.upload_bytes),
            downloads: f(self.downloads, other.downloads),
            download_bytes: f(self.download_bytes, other.download_bytes),
            syncs: f(self.syncs, other.syncs),
            allocations: f(self.allocations, other.allocations),
            allocation_bytes: f(self.allocation_bytes, other.allocation_bytes),
        }
    }
}

impl Add for DeviceCounts {
    type Output = DeviceCounts;
    fn add(self, rhs: DeviceCounts) -> DeviceCounts {
        self.zip(&rhs, u64::saturating_add)
    }
}

impl fmt::Display for DeviceCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} launches, {} uploads ({} B), {} downloads ({} B), {} syncs, {} allocations ({} B)",
            self.launches,
            self.uploads,
            self.upload_bytes,
            self.downloads,
            self.download_bytes,
            self.syncs,
            self.allocations,
            self.allocation_bytes
        )
    }
}

/// What one protocol round must cost a party's device at the least, whatever the protocol:
/// the floor a round's measured counts are held against.
///
/// A round sends a message computed on the device and consumes the one received, so it
/// needs at least one launch. Between parties on different hosts the message must also
/// leave the device and enter the other (one download, with the wait it implies, and one
/// upload); between parties on one device it needs neither. A round needs no allocation:
/// buffers can be reused.
pub fn round_floor(parties_share_a_device: bool) -> DeviceCounts {
    let moves = u64::from(!parties_share_a_device);
    DeviceCounts {
        launches: 1,
        uploads: moves,
        downloads: moves,
        syncs: moves,
        ..DeviceCounts::ZERO
    }
}

thread_local! {
    static COUNTS: Cell<DeviceCounts> = const { Cell::new(DeviceCounts::ZERO) };
}

/// The calling thread's counters: everything every backend did for this thread so far.
pub fn thread_counts() -> DeviceCounts {
    COUNTS.get()
}

/// Adds to the calling thread's counters: for backends (see the [module docs](self)).
pub fn record(update: impl FnOnce(&mut DeviceCounts)) {
    COUNTS.with(|cell| {
        let mut counts = cell.get();
        update(&mut counts);
        cell.set(counts);
    });
}

/// Records `n` kernel launches.
pub fn record_launches(n: u64) {
    record(|c| c.launches += n);
}

/// Records a host→device transfer of `bytes`.
pub fn record_upload(bytes: u64) {
    record(|c| {
        c.uploads += 1;
        c.upload_bytes += bytes;
    });
}

/// Records a device→host transfer of `bytes`; `waits` says whether it made the host wait
/// for the device (a GPU download does; the CPU's does not).
pub fn record_download(bytes: u64, waits: bool) {
    record(|c| {
        c.downloads += 1;
        c.download_bytes += bytes;
        c.syncs += u64::from(waits);
    });
}

/// Records a wait of the host for the device.
pub fn record_sync() {
    record(|c| c.syncs += 1);
}

/// Records a device allocation of `bytes`.
pub fn record_allocation(bytes: u64) {
    record(|c| {
        c.allocations += 1;
        c.allocation_bytes += bytes;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_per_thread_and_differences_are_what_happened_between() {
        let before = thread_counts();
        record_launches(3);
        record_upload(80);
        record_download(16, true);
        record_allocation(64);
        record_sync();
        let spent = thread_counts().since(&before);
        assert_eq!(
            spent,
            DeviceCounts {
                launches: 3,
                uploads: 1,
                upload_bytes: 80,
                downloads: 1,
                download_bytes: 16,
                syncs: 2,
                allocations: 1,
                allocation_bytes: 64,
            }
        );
        assert_eq!(spent.transfers(), 2);
        assert_eq!(spent.transfer_bytes(), 96);
        // Another thread starts from zero and does not see these.
        let other = std::thread::spawn(|| {
            record_launches(1);
            thread_counts()
        })
        .join()
        .unwrap();
        assert_eq!(other.launches, 1);
        assert_eq!(thread_counts().since(&before).launches, 3);
        assert_eq!((spent + spent).launches, 6);
    }

    #[test]
    fn a_round_between_hosts_must_move_its_message_one_on_a_device_need_not() {
        let across = round_floor(false);
        assert_eq!(
            (across.launches, across.transfers(), across.syncs),
            (1, 2, 1)
        );
        let shared = round_floor(true);
        assert_eq!(
            (shared.launches, shared.transfers(), shared.syncs),
            (1, 0, 0)
        );
    }
}
