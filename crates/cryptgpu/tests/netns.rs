//! Three `cryptgpu party` processes on real interfaces: each in its own network namespace,
//! joined over veth pairs and a bridge (198.18.0.0/24, `tc tbf` shaping), they run a private
//! inference while one party is killed, stopped, terminated, cut off or flapped, or while a
//! stranger floods one of them; the test checks exit codes, how soon the others stop, whom
//! they blame and that no partial output is left. It needs root and `ip netns`; elsewhere it
//! prints why it skipped (or fails, with `CRYPTGPU_REQUIRE_NETNS=1`).

#[path = "netns/flood.rs"]
mod flood;
#[path = "netns/lab.rs"]
mod lab;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lab::{Lab, PARTY_ADDRESSES, STRANGER_ADDRESS};

const BIN: &str = env!("CARGO_BIN_EXE_cryptgpu");

/// The parties' port (each on its own address).
const PORT: u16 = 7000;
/// The deployment's connect and receive timeouts, in seconds.
const CONNECT_SECS: u64 = 10;
const RECV_SECS: u64 = 6;
/// Slack on top of the receive timeout for a survivor to stop (a loaded 2-core machine).
const SLACK_SECS: u64 = 5;
/// Examples and batch of the job: long enough to inject a fault mid-job.
const EXAMPLES: usize = 240;
const BATCH: usize = 12;
/// The flood: idle connections held and its longest duration.
const FLOOD_IDLE: usize = 1000;
const FLOOD_SECS: u64 = 40;

/// Raises the soft limit of open files to the hard one, then runs the command.
const RAISE_NOFILE: &str = r#"ulimit -n "$(ulimit -H -n)" 2>/dev/null; exec "$0" "$@""#;

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// A process started in a namespace, its output collected as it comes.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    /// Its exit status and when it was seen, or `None` while it runs.
    ended: Option<(ExitStatus, Instant)>,
    /// Killed by the test for running past its deadline.
    hung: bool,
}

/// A reader thread appending `from` to `into`.
fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            into.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_str(&text);
        }
    })
}

impl Proc {
    /// Runs `program args...` in namespace `ns` (the PID is the program's: `ip netns exec`
    /// and the shell both exec), with `env` set and its working directory `dir`.
    fn start(ns: &str, program: &str, args: &[String], env: &[(&str, String)], dir: &Path) -> Proc {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, "sh", "-c", RAISE_NOFILE, program])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in {ns}: {e}"));
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let readers = vec![
            collect(child.stdout.take().expect("piped"), Arc::clone(&stdout)),
            collect(child.stderr.take().expect("piped"), Arc::clone(&stderr)),
        ];
        Proc {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            readers,
            ended: None,
            hung: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether it has exited (recording when it was first seen so).
    fn poll(&mut self) -> bool {
        if self.ended.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.ended = Some((status, Instant::now()));
        }
        self.ended.is_some()
    }

    /// Kills it (it ran past its deadline) and reaps it.
    fn kill_hung(&mut self) {
        self.hung = true;
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status();
        if let Ok(status) = self.child.wait() {
            self.ended = Some((status, Instant::now()));
        }
    }

    /// Waits until it exits or `deadline` passes (then kills it); true if it exited.
    fn wait_until(&mut self, deadline: Instant) -> bool {
        while !self.poll() {
            if Instant::now() >= deadline {
                self.kill_hung();
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Waits for the output readers (after exit).
    fn finish(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// The exit as a short word: the code, `sig9`, or `hung`.
    fn exit_word(&self) -> String {
        match (&self.ended, self.hung) {
            (_, true) => "hung".into(),
            (Some((s, _)), _) => match (s.code(), s.signal()) {
                (Some(c), _) => c.to_string(),
                (None, Some(sig)) => format!("sig{sig}"),
                _ => "?".into(),
            },
            (None, _) => "running".into(),
        }
    }

    fn succeeded(&self) -> bool {
        !self.hung && self.ended.is_some_and(|(s, _)| s.success())
    }

    fn failed(&self) -> bool {
        !self.hung && self.ended.is_some_and(|(s, _)| !s.success())
    }

    /// Seconds from `since` to its exit.
    fn secs_since(&self, since: Instant) -> f64 {
        self.ended.map_or(f64::NAN, |(_, at)| {
            at.saturating_duration_since(since).as_secs_f64()
        })
    }
}

/// The test's folder (the deployment, a folder per case), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("cryptgpu-netns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `sig` (e.g. "STOP") to process `pid`.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// The party named first in the first `error:` line of `stderr`.
fn blamed(stderr: &str) -> Option<usize> {
    let line = stderr
        .lines()
        .map(|l| l.trim_start_matches('\r'))
        .find(|l| l.starts_with("error:"))?;
    let bytes = line.as_bytes();
    let at = (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'P' && (b'0'..=b'2').contains(&bytes[i + 1]))?;
    Some(usize::from(bytes[at + 1] - b'0'))
}

/// The first `error:` line of `stderr`, or "".
fn error_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(|l| l.trim_start_matches('\r'))
        .find(|l| l.starts_with("error:"))
        .unwrap_or("")
        .to_string()
}

/// `cryptgpu certs` for the three namespaced addresses, with the test's timeouts.
fn deployment(dir: &Path) -> PathBuf {
    let addresses: Vec<String> = PARTY_ADDRESSES
        .iter()
        .map(|a| format!("{a}:{PORT}"))
        .collect();
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--addresses", &addresses.join(",")])
        .output()
        .expect("running cryptgpu certs");
    assert!(
        out.status.success(),
        "cryptgpu certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("parties.toml");
    let text = std::fs::read_to_string(&path).expect("reading parties.toml");
    let mut edited = String::new();
    for line in text.lines() {
        if line.starts_with("connect_timeout_secs") {
            edited.push_str(&format!("connect_timeout_secs = {CONNECT_SECS}\n"));
        } else if line.starts_with("recv_timeout_secs") {
            edited.push_str(&format!("recv_timeout_secs = {RECV_SECS}\n"));
        } else {
            edited.push_str(line);
            edited.push('\n');
        }
    }
    assert!(edited.contains(&format!("recv_timeout_secs = {RECV_SECS}\n")));
    std::fs::write(&path, edited).expect("writing parties.toml");
    path
}

/// Each party's arguments after `party --config C --id N`: P0 the LeNet weights, P1 the
/// bundled digits (and the predictions file `out`), P2 nothing.
fn job_args(out: &Path) -> [Vec<String>; 3] {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let weights = assets().join("lenet-mnist.safetensors");
    let sample = assets().join("mnist-sample");
    [
        s(&[
            "infer",
            "--model",
            "lenet",
            "--weights",
            &weights.display().to_string(),
        ]),
        s(&[
            "infer",
            "--data",
            &sample.display().to_string(),
            "--limit",
            &EXAMPLES.to_string(),
            "--batch",
            &BATCH.to_string(),
            "--out",
            &out.display().to_string(),
        ]),
        s(&["infer"]),
    ]
    .map(|mut a| {
        a.extend(s(&["--backend", "cpu"]));
        a
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// `kill -9` mid-job.
    Kill,
    /// SIGSTOP mid-job, SIGCONT once the others have exited.
    Stop,
    /// SIGTERM mid-job.
    Term,
    /// A stranger floods the victim's address before and during setup.
    Flood,
    /// The victim's interface goes down mid-job (and up after the case).
    Partition,
    /// The victim's interface goes down and up again quickly mid-job.
    Flap,
}

struct Case {
    name: &'static str,
    fault: Fault,
    victim: usize,
}

/// What the test knows across cases.
struct Ctx<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    config: PathBuf,
    /// Seconds from all three connected to all three exited, in the baseline.
    job_secs: f64,
    /// Lines of a whole predictions file.
    whole_lines: usize,
    failures: Vec<String>,
    expected_failures: Vec<String>,
    notes: Vec<String>,
    rows: Vec<String>,
}

impl Ctx<'_> {
    fn fail(&mut self, case: &str, what: String) {
        eprintln!("netns: FAILED [{case}]: {what}");
        self.failures.push(format!("[{case}] {what}"));
    }

    fn check(&mut self, ok: bool, case: &str, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            self.fail(case, what);
        }
    }
}

/// Starts party `id` of the case in its namespace.
fn start_party(ctx: &Ctx<'_>, id: usize, args: &[String], dir: &Path) -> Proc {
    let mut full = vec![
        "party".to_string(),
        "--config".into(),
        ctx.config.display().to_string(),
        "--id".into(),
        id.to_string(),
    ];
    full.extend(args.iter().cloned());
    Proc::start(&ctx.lab.party(id), BIN, &full, &[], dir)
}

/// Waits until `proc`'s stdout (or stderr) contains `needle` or `limit` passes; true if it
/// did.
fn wait_for_text(proc: &Proc, stdout: bool, needle: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let text = if stdout { proc.stdout() } else { proc.stderr() };
        if text.contains(needle) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits until all three have printed that they are connected (or one has exited, or the
/// connect timeout with slack has passed); returns when.
fn wait_connected(parties: &mut [Proc], case: &str) -> Instant {
    let until = Instant::now() + Duration::from_secs(CONNECT_SECS + SLACK_SECS);
    loop {
        let connected = parties
            .iter()
            .filter(|p| p.stderr().contains("connected to"))
            .count();
        let exited = parties.iter_mut().any(Proc::poll);
        if connected == parties.len() || exited || Instant::now() >= until {
            if connected != parties.len() {
                eprintln!("netns: [{case}] only {connected} parties said they connected");
            }
            return Instant::now();
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for every party not yet ended until its deadline (killing it after).
fn wait_all(parties: &mut [Proc], deadlines: &[Instant]) {
    loop {
        let mut running = false;
        for (p, &deadline) in parties.iter_mut().zip(deadlines) {
            if p.poll() {
                continue;
            }
            if Instant::now() >= deadline {
                p.kill_hung();
            } else {
                running = true;
            }
        }
        if !running {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    for p in parties.iter_mut() {
        p.finish();
    }
}

/// The files in `dir`.
fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one case and checks it.
fn run_case(ctx: &mut Ctx<'_>, case: &Case) {
    let name = case.name;
    let v = case.victim;
    let dir = ctx.dir.join(name);
    std::fs::create_dir_all(&dir).expect("creating the case's folder");
    let out = dir.join("predictions.csv");
    let args = job_args(&out);
    let started = Instant::now();
    eprintln!("netns: case {name}: {:?} of P{v}", case.fault);

    // The flood begins before the others start: the victim listens, the stranger connects.
    let mut flooder = None;
    let mut parties: Vec<Option<Proc>> = vec![None, None, None];
    if case.fault == Fault::Flood {
        let target = start_party(ctx, v, &args[v], &dir);
        if !wait_for_text(&target, false, "listening on", Duration::from_secs(5)) {
            ctx.notes
                .push(format!("[{name}] P{v} did not say it listens within 5 s"));
        }
        parties[v] = Some(target);
        let exe = std::env::current_exe().expect("the test binary's path");
        let f = Proc::start(
            &ctx.lab.name("st"),
            &exe.display().to_string(),
            &[
                "flood_helper".into(),
                "--exact".into(),
                "--nocapture".into(),
                "--test-threads=1".into(),
            ],
            &[(
                flood::FLOOD_ENV,
                format!("{}:{PORT},{FLOOD_IDLE},{FLOOD_SECS}", PARTY_ADDRESSES[v]),
            )],
            &ctx.dir,
        );
        let ready = wait_for_text(&f, true, "flood: ready", Duration::from_secs(8));
        ctx.check(ready, name, || {
            "the flooder did not get ready within 8 s".into()
        });
        flooder = Some(f);
    }
    for (id, a) in args.iter().enumerate() {
        if parties[id].is_none() {
            parties[id] = Some(start_party(ctx, id, a, &dir));
        }
    }
    let mut parties: Vec<Proc> = parties.into_iter().map(|p| p.expect("started")).collect();

    let connected_at = wait_connected(&mut parties, name);
    let fault_delay = Duration::from_secs_f64((ctx.job_secs * 0.3).clamp(0.5, 3.0));
    let bound = Duration::from_secs(RECV_SECS + SLACK_SECS);
    let mut resumed_at = None;
    let (fault_at, mut deadlines) = match case.fault {
        Fault::Flood => {
            let limit = Duration::from_secs_f64(ctx.job_secs.max(5.0) * 4.0) + bound;
            (started, [connected_at + limit; 3])
        }
        Fault::Kill | Fault::Stop | Fault::Term | Fault::Partition | Fault::Flap => {
            thread::sleep(fault_delay.saturating_sub(connected_at.elapsed()));
            for (id, p) in parties.iter_mut().enumerate() {
                ctx.check(!p.poll(), name, || {
                    format!("P{id} had exited before the fault: the job is too short")
                });
            }
            let pid = parties[v].pid();
            match case.fault {
                Fault::Kill => signal(pid, "KILL"),
                Fault::Stop => signal(pid, "STOP"),
                Fault::Term => signal(pid, "TERM"),
                _ => {
                    if let Err(e) = ctx.lab.set_link(v, false) {
                        ctx.fail(name, format!("setting P{v}'s link down: {e}"));
                    }
                }
            }
            let at = Instant::now();
            let mut deadlines = [at + bound; 3];
            if case.fault == Fault::Flap {
                thread::sleep(Duration::from_millis(500));
                if let Err(e) = ctx.lab.set_link(v, true) {
                    ctx.fail(name, format!("setting P{v}'s link up: {e}"));
                }
                // The job may go on: allow the rest of it.
                let limit = Duration::from_secs_f64(ctx.job_secs * 2.0) + bound;
                deadlines = [at + limit; 3];
            }
            if case.fault == Fault::Stop {
                // The stopped party is waited for after it is resumed.
                deadlines[v] = at + Duration::from_secs(3600);
            }
            (at, deadlines)
        }
    };

    if case.fault == Fault::Stop {
        let others: Vec<usize> = (0..3).filter(|&i| i != v).collect();
        let until = deadlines[others[0]];
        loop {
            let all = others.iter().all(|&i| parties[i].poll());
            if all || Instant::now() >= until {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        for &i in &others {
            if !parties[i].poll() {
                parties[i].kill_hung();
            }
        }
        signal(parties[v].pid(), "CONT");
        let now = Instant::now();
        resumed_at = Some(now);
        deadlines[v] = now + bound;
    }
    wait_all(&mut parties, &deadlines);
    if case.fault == Fault::Partition
        && let Err(e) = ctx.lab.set_link(v, true)
    {
        ctx.fail(name, format!("setting P{v}'s link up again: {e}"));
    }
    if let Some(mut f) = flooder.take() {
        drop(f.stdin.take()); // tells the flooder to stop
        let stopped = f.wait_until(Instant::now() + Duration::from_secs(10));
        f.finish();
        ctx.check(stopped, name, || {
            "the flooder did not stop by itself".into()
        });
        let report: Vec<String> = f
            .stdout()
            .lines()
            .filter_map(|l| l.find("flood:").map(|at| l[at..].to_string()))
            .collect();
        ctx.notes.push(format!(
            "[{name}] stranger {STRANGER_ADDRESS}: {}",
            report.join("; ")
        ));
    }
    let case_secs = started.elapsed().as_secs_f64();

    // Report the case.
    let mut cells = Vec::new();
    for (id, p) in parties.iter().enumerate() {
        let since = if Some(id) == Some(v) && resumed_at.is_some() {
            resumed_at.unwrap_or(fault_at)
        } else {
            fault_at
        };
        let blame = blamed(&p.stderr()).map_or("-".to_string(), |b| format!("P{b}"));
        cells.push(format!(
            "{:>4} {:>6.2}s {:>2}",
            p.exit_word(),
            p.secs_since(since),
            blame
        ));
    }
    let row = format!(
        "{name:<10} {:<12} | {} | {case_secs:>5.1}s",
        format!("{:?} P{v}", case.fault),
        cells.join(" | ")
    );
    eprintln!("netns: {row}");
    for (id, p) in parties.iter().enumerate() {
        let e = error_line(&p.stderr());
        if !e.is_empty() {
            eprintln!("netns:   P{id}: {e}");
        }
    }
    ctx.rows.push(row);

    // Check it.
    let failures_before = ctx.failures.len();
    let stderr: Vec<String> = parties.iter().map(Proc::stderr).collect();
    for (id, p) in parties.iter().enumerate() {
        ctx.check(!p.hung, name, || {
            format!("P{id} was still running at its deadline: {}", stderr[id])
        });
    }
    let others: Vec<usize> = (0..3).filter(|&i| i != v).collect();
    match case.fault {
        Fault::Flood => {
            for (id, p) in parties.iter().enumerate() {
                ctx.check(p.succeeded(), name, || {
                    format!("P{id} exited {}: {}", p.exit_word(), stderr[id])
                });
            }
        }
        Fault::Kill | Fault::Stop | Fault::Term | Fault::Partition => {
            for &id in &others {
                let p = &parties[id];
                ctx.check(p.failed(), name, || {
                    format!("P{id} exited {} although P{v} failed", p.exit_word())
                });
                let secs = p.secs_since(fault_at);
                ctx.check(secs <= bound.as_secs_f64(), name, || {
                    format!("P{id} stopped {secs:.2} s after the fault (bound {bound:?})")
                });
                ctx.check(blamed(&stderr[id]) == Some(v), name, || {
                    format!(
                        "P{id} does not name P{v} first: {}",
                        error_line(&stderr[id])
                    )
                });
            }
        }
        Fault::Flap => {}
    }
    let victim = &parties[v];
    match case.fault {
        Fault::Kill => {
            ctx.check(
                victim.ended.is_some_and(|(s, _)| s.signal() == Some(9)),
                name,
                || format!("P{v} exited {}, not by SIGKILL", victim.exit_word()),
            );
        }
        Fault::Stop => {
            ctx.check(victim.failed(), name, || {
                format!("resumed P{v} exited {}", victim.exit_word())
            });
            let said = error_line(&stderr[v]);
            ctx.notes.push(format!(
                "[{name}] resumed P{v} exited {} {:.2} s after SIGCONT and printed: {said}",
                victim.exit_word(),
                victim.secs_since(resumed_at.unwrap_or(fault_at))
            ));
            if victim.failed() && blamed(&stderr[v]) != Some(v) {
                let what = format!(
                    "[{name}] EXPECTED FAILURE: resumed P{v} blames {} rather than itself: {said}",
                    blamed(&stderr[v]).map_or("nobody".into(), |b| format!("P{b}"))
                );
                eprintln!("netns: {what}");
                ctx.expected_failures.push(what);
            }
        }
        Fault::Term => {
            ctx.check(victim.failed(), name, || {
                format!("P{v} exited {} after SIGTERM", victim.exit_word())
            });
            let code = victim.ended.and_then(|(s, _)| s.code());
            if code != Some(130) {
                ctx.notes.push(format!(
                    "[{name}] P{v} exited {} after SIGTERM, not 130",
                    victim.exit_word()
                ));
            }
            let secs = victim.secs_since(fault_at);
            ctx.check(secs <= SLACK_SECS as f64, name, || {
                format!("P{v} took {secs:.2} s to stop after SIGTERM")
            });
        }
        Fault::Partition => {
            ctx.check(victim.failed(), name, || {
                format!("cut-off P{v} exited {}", victim.exit_word())
            });
            let secs = victim.secs_since(fault_at);
            ctx.check(secs <= bound.as_secs_f64(), name, || {
                format!("cut-off P{v} stopped {secs:.2} s after the cut (bound {bound:?})")
            });
            ctx.notes.push(format!(
                "[{name}] cut-off P{v} said: {}",
                error_line(&stderr[v])
            ));
        }
        Fault::Flap => {
            let words: Vec<String> = parties
                .iter()
                .enumerate()
                .map(|(id, p)| {
                    let e = error_line(&stderr[id]);
                    if e.is_empty() {
                        format!("P{id} exit {}", p.exit_word())
                    } else {
                        format!("P{id} exit {}: {e}", p.exit_word())
                    }
                })
                .collect();
            ctx.notes.push(format!("[{name}] {}", words.join("; ")));
        }
        Fault::Flood => {}
    }

    // Outputs: whole when the data owner succeeded, else nothing at all.
    let left = files_in(&dir);
    if parties[1].succeeded() {
        ctx.check(left == ["predictions.csv"], name, || {
            format!("files left besides the predictions: {left:?}")
        });
        let lines = std::fs::read_to_string(&out).map_or(0, |t| t.lines().count());
        let whole = ctx.whole_lines;
        ctx.check(lines == whole, name, || {
            format!("predictions.csv has {lines} lines, a whole one {whole}")
        });
    } else {
        ctx.check(left.is_empty(), name, || {
            format!("the failed job left files: {left:?}")
        });
    }
    if ctx.failures.len() > failures_before {
        for (id, e) in stderr.iter().enumerate() {
            eprintln!("netns: [{name}] P{id}'s stderr:\n{e}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn parties_in_network_namespaces_stop_naming_the_failed_party() {
    let required = std::env::var("CRYPTGPU_REQUIRE_NETNS").is_ok_and(|v| v == "1");
    let lab = match Lab::new() {
        Ok(lab) => lab,
        Err(lab::Unavailable(why)) => {
            assert!(!required, "CRYPTGPU_REQUIRE_NETNS=1 but: {why}");
            eprintln!("netns test skipped: {why}");
            return;
        }
    };
    let begun = Instant::now();
    for id in 0..3 {
        eprintln!("netns: P{id} in {}: {}", lab.party(id), lab.qdisc(id));
    }
    let scratch = Scratch::new();
    let dir = scratch.0.clone();
    let config = deployment(&dir);
    let mut ctx = Ctx {
        lab: &lab,
        dir: dir.clone(),
        config,
        job_secs: 0.0,
        whole_lines: EXAMPLES + 1,
        failures: Vec::new(),
        expected_failures: Vec::new(),
        notes: Vec::new(),
        rows: Vec::new(),
    };

    // The baseline, timed: the faults land at 30 % of it.
    let baseline_dir = dir.join("baseline");
    std::fs::create_dir_all(&baseline_dir).expect("creating the baseline folder");
    let out = baseline_dir.join("predictions.csv");
    let args = job_args(&out);
    let start = Instant::now();
    let mut parties: Vec<Proc> = (0..3)
        .map(|id| start_party(&ctx, id, &args[id], &baseline_dir))
        .collect();
    let connected = wait_connected(&mut parties, "baseline");
    wait_all(&mut parties, &[start + Duration::from_secs(300); 3]);
    ctx.job_secs = connected.elapsed().as_secs_f64();
    let setup_secs = connected.duration_since(start).as_secs_f64();
    let cells: Vec<String> = parties
        .iter()
        .map(|p| {
            format!(
                "{:>4} {:>6.2}s {:>2}",
                p.exit_word(),
                p.secs_since(start),
                "-"
            )
        })
        .collect();
    let row = format!(
        "{:<10} {:<12} | {} | {:>5.1}s (setup {setup_secs:.1} s, job {:.1} s)",
        "baseline",
        "-",
        cells.join(" | "),
        start.elapsed().as_secs_f64(),
        ctx.job_secs
    );
    eprintln!("netns: {row}");
    ctx.rows.push(row);
    for (id, p) in parties.iter().enumerate() {
        ctx.check(p.succeeded(), "baseline", || {
            format!("P{id} exited {}: {}", p.exit_word(), p.stderr())
        });
    }
    // The shares went over the shaped veth interfaces.
    for id in 0..3 {
        let sent = lab.sent_bytes(id);
        eprintln!(
            "netns: P{id} sent {:.1} MB through its tbf qdisc",
            sent as f64 / 1e6
        );
        ctx.check(sent > 1_000_000, "baseline", || {
            format!("P{id}'s interface shows only {sent} bytes sent")
        });
    }
    let lines = std::fs::read_to_string(&out).map_or(0, |t| t.lines().count());
    ctx.check(lines == EXAMPLES + 1, "baseline", || {
        format!("predictions.csv has {lines} lines, not {}", EXAMPLES + 1)
    });
    let left = files_in(&baseline_dir);
    ctx.check(left == ["predictions.csv"], "baseline", || {
        format!("files left: {left:?}")
    });
    if !ctx.failures.is_empty() {
        panic!("the baseline job failed: {:#?}", ctx.failures);
    }

    let cases = [
        Case {
            name: "kill",
            fault: Fault::Kill,
            victim: 2,
        },
        Case {
            name: "stop",
            fault: Fault::Stop,
            victim: 0,
        },
        Case {
            name: "term",
            fault: Fault::Term,
            victim: 1,
        },
        Case {
            name: "flood",
            fault: Fault::Flood,
            victim: 0,
        },
        Case {
            name: "partition",
            fault: Fault::Partition,
            victim: 2,
        },
        Case {
            name: "flap",
            fault: Fault::Flap,
            victim: 1,
        },
    ];
    for case in &cases {
        run_case(&mut ctx, case);
    }

    eprintln!();
    eprintln!(
        "netns: {:<10} {:<12} | {:<16} | {:<16} | {:<16} | case",
        "case", "fault", "P0 exit s blame", "P1 exit s blame", "P2 exit s blame"
    );
    eprintln!(
        "netns: (s: seconds from the fault to the exit; for a resumed party from SIGCONT; for \
         baseline and flood from the start)"
    );
    for row in &ctx.rows {
        eprintln!("netns: {row}");
    }
    for note in &ctx.notes {
        eprintln!("netns: note: {note}");
    }
    for e in &ctx.expected_failures {
        eprintln!("netns: {e}");
    }
    eprintln!("netns: total {:.1} s", begun.elapsed().as_secs_f64());
    let failures = std::mem::take(&mut ctx.failures);
    drop(ctx);
    drop(scratch);
    drop(lab);
    assert!(
        failures.is_empty(),
        "netns cases failed:\n{}",
        failures.join("\n")
    );
}

/// Not a test of its own: the flood case runs this binary again in the stranger's namespace
/// with `CRYPTGPU_NETNS_FLOOD` set, and this is the stranger. Without it, it does nothing.
#[test]
fn flood_helper() {
    if let Ok(spec) = std::env::var(flood::FLOOD_ENV) {
        flood::run(&spec);
    }
}
