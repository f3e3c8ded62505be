//! The stranger of the netns test's flood case, run in its own namespace by re-executing the
//! test binary: it holds many idle TCP connections to one party's listening address and
//! sends a stream of garbage connections to it, all bounded in count and in time, and stops
//! early when its standard input closes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The environment variable that makes the helper test a flooder:
/// `ADDRESS:PORT,IDLE_CONNECTIONS,SECONDS`.
pub(crate) const FLOOD_ENV: &str = "CRYPTGPU_NETNS_FLOOD";

/// The most garbage connections one flood makes.
const MAX_GARBAGE: usize = 3000;

/// How long the flooder tries to open its idle connections before it says it is ready.
const READY_WITHIN: Duration = Duration::from_secs(4);

/// The soft limit of open files of this process, from /proc (without libc).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Runs the flood described by `spec` (see [`FLOOD_ENV`]) and prints what it did.
pub(crate) fn run(spec: &str) {
    let mut parts = spec.split(',');
    let target: SocketAddr = parts
        .next()
        .and_then(|a| a.parse().ok())
        .expect("flood target ADDRESS:PORT");
    let wanted: usize = parts
        .next()
        .and_then(|n| n.parse().ok())
        .expect("flood idle connections");
    let secs: u64 = parts
        .next()
        .and_then(|n| n.parse().ok())
        .expect("flood seconds");
    // Keep some descriptors for the garbage stream and the process itself.
    let idle_count = open_files_limit().map_or(wanted, |l| wanted.min(l.saturating_sub(64)));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut sink = [0u8; 64];
            // Standard input closes (or says anything) when the test wants the flood over.
            let _ = std::io::stdin().read(&mut sink);
            stop.store(true, Ordering::SeqCst);
        });
    }
    let over = {
        let stop = stop.clone();
        move || stop.load(Ordering::SeqCst) || Instant::now() >= deadline
    };

    let garbage = {
        let over = over.clone();
        thread::spawn(move || {
            let (mut sent, mut failed) = (0usize, 0usize);
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            while !over() && sent + failed < MAX_GARBAGE {
                match TcpStream::connect_timeout(&target, Duration::from_millis(300)) {
                    Ok(mut s) => {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let len = 1 + (state % 4096) as usize;
                        let bytes: Vec<u8> = (0..len)
                            .map(|i| (state >> ((i % 8) * 8)) as u8 ^ (i as u8))
                            .collect();
                        let _ = s.set_write_timeout(Some(Duration::from_millis(300)));
                        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                        let _ = s.write_all(&bytes);
                        let mut reply = [0u8; 256];
                        let _ = s.read(&mut reply);
                        sent += 1;
                    }
                    Err(_) => {
                        failed += 1;
                        thread::sleep(Duration::from_millis(20));
                    }
                }
                thread::sleep(Duration::from_millis(3));
            }
            (sent, failed)
        })
    };

    let mut idle = Vec::with_capacity(idle_count);
    let mut refused = 0usize;
    let ready_by = Instant::now() + READY_WITHIN;
    while idle.len() < idle_count && Instant::now() < ready_by && !over() {
        match TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
            Ok(s) => idle.push(s),
            Err(_) => {
                refused += 1;
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    println!(
        "flood: ready: {} idle connections to {target} ({refused} attempts failed)",
        idle.len()
    );
    let _ = std::io::stdout().flush();
    while !over() {
        thread::sleep(Duration::from_millis(50));
    }
    let held = idle.len();
    drop(idle);
    let (sent, failed) = garbage.join().unwrap_or((0, 0));
    println!(
        "flood: done: held {held} idle connections, sent {sent} garbage connections \
         ({failed} failed to connect)"
    );
    let _ = std::io::stdout().flush();
}
