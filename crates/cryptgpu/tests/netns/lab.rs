//! The network lab of the netns test: network namespaces for the three parties and a
//! stranger, joined by veth pairs to a bridge in a namespace of its own, with addresses from
//! 198.18.0.0/24 (the benchmarking range) and `tc tbf` shaping on each party's interface.
//! Nothing is created in the root namespace, and [`Lab`]'s `Drop` kills whatever runs in
//! the namespaces and removes them, also when the test panics.

use std::path::Path;
use std::process::{Command, Output};

/// The prefix of every namespace the test creates: `cg<pid><role>`.
const PREFIX: &str = "cg";

/// The roles of the namespaces after the PID in their names: the parties, the stranger and
/// the bridge.
const ROLES: [&str; 5] = ["p0", "p1", "p2", "st", "br"];

/// The parties' addresses, P0 to P2.
pub(crate) const PARTY_ADDRESSES: [&str; 3] = ["198.18.0.10", "198.18.0.11", "198.18.0.12"];

/// The stranger's address: on the parties' network, but no configured peer.
pub(crate) const STRANGER_ADDRESS: &str = "198.18.0.20";

/// The interface of each member namespace (its end of the veth pair to the bridge).
pub(crate) const IFACE: &str = "eth0";

/// The shaping of each party's interface.
const TBF: [&str; 6] = ["rate", "1gbit", "burst", "256kb", "latency", "50ms"];

/// Why the lab could not be built: the test skips (or fails under
/// `CRYPTGPU_REQUIRE_NETNS=1`) with this reason.
#[derive(Debug)]
pub(crate) struct Unavailable(pub(crate) String);

/// Three party namespaces, a stranger's and a bridge's; removed on drop.
#[derive(Debug)]
pub(crate) struct Lab {
    /// The namespaces created so far, in creation order.
    created: Vec<String>,
    pid: u32,
}

impl Lab {
    /// Builds the lab, first removing stale namespaces of dead test processes.
    pub(crate) fn new() -> Result<Lab, Unavailable> {
        if !is_root() {
            return Err(Unavailable("not running as root".into()));
        }
        for tool in ["ip", "tc"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(Unavailable(format!("`{tool}` is not installed")));
            }
        }
        remove_stale();
        let mut lab = Lab {
            created: Vec::new(),
            pid: std::process::id(),
        };
        // The first `ip netns add` tells whether namespaces work here at all.
        let first = lab.name("p0");
        run("ip", &["netns", "add", &first])
            .map_err(|e| Unavailable(format!("`ip netns add` failed: {e}")))?;
        lab.created.push(first);
        lab.build()
            .map_err(|e| Unavailable(format!("building the namespaces failed: {e}")))?;
        Ok(lab)
    }

    /// The namespace of `role` ("p0".."p2", "st", "br").
    pub(crate) fn name(&self, role: &str) -> String {
        format!("{PREFIX}{}{role}", self.pid)
    }

    /// The namespace of party `id`.
    pub(crate) fn party(&self, id: usize) -> String {
        self.name(&format!("p{id}"))
    }

    fn build(&mut self) -> Result<(), String> {
        for role in &ROLES[1..] {
            let ns = self.name(role);
            run("ip", &["netns", "add", &ns])?;
            self.created.push(ns);
        }
        let br = self.name("br");
        run("ip", &["-n", &br, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &br, "link", "set", "br0", "up"])?;
        let members = [
            ("p0", PARTY_ADDRESSES[0], true),
            ("p1", PARTY_ADDRESSES[1], true),
            ("p2", PARTY_ADDRESSES[2], true),
            ("st", STRANGER_ADDRESS, false),
        ];
        for (role, address, shaped) in members {
            let ns = self.name(role);
            let port = format!("v{role}");
            // Both ends are made in the bridge's namespace, one moved at once into the
            // member's: no interface ever exists in the root namespace.
            run(
                "ip",
                &[
                    "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", IFACE,
                    "netns", &ns,
                ],
            )?;
            run("ip", &["-n", &br, "link", "set", &port, "master", "br0"])?;
            run("ip", &["-n", &br, "link", "set", &port, "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    IFACE,
                ],
            )?;
            run("ip", &["-n", &ns, "link", "set", IFACE, "up"])?;
            if shaped {
                let mut args = vec!["-n", &ns, "qdisc", "add", "dev", IFACE, "root", "tbf"];
                args.extend(TBF);
                run("tc", &args)?;
            }
        }
        Ok(())
    }

    /// Sets party `id`'s interface down or up.
    pub(crate) fn set_link(&self, id: usize, up: bool) -> Result<(), String> {
        let ns = self.party(id);
        let state = if up { "up" } else { "down" };
        run("ip", &["-n", &ns, "link", "set", IFACE, state])
    }

    /// Bytes sent so far through the shaping of party `id`'s interface (`tc -s`).
    pub(crate) fn sent_bytes(&self, id: usize) -> u64 {
        let ns = self.party(id);
        Command::new("tc")
            .args(["-n", &ns, "-s", "qdisc", "show", "dev", IFACE])
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let after = text.split("Sent ").nth(1)?;
                after.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// The shaping of party `id`'s interface, as `tc qdisc show` prints it.
    pub(crate) fn qdisc(&self, id: usize) -> String {
        let ns = self.party(id);
        Command::new("tc")
            .args(["-n", &ns, "qdisc", "show", "dev", IFACE])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            remove(ns);
        }
    }
}

/// Whether the effective user is root (from /proc, without libc).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs `tool args...`; an error says which command failed and what it printed.
fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    let output: Output = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| format!("{tool} {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} {}: {} {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Kills the processes in namespace `ns` (only this test's, or a dead test's, start any
/// there) and deletes it; the veth pairs and the bridge go with their namespaces.
fn remove(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if pid.parse::<u32>().is_ok() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes the namespaces `cg<pid><role>` of test processes that no longer exist.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let me = std::process::id();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(role) = ROLES.iter().find(|r| rest.ends_with(*r)) else {
            continue;
        };
        let digits = &rest[..rest.len() - role.len()];
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netns: removing the stale namespace {name} of dead process {pid}");
            remove(name);
        }
    }
}
