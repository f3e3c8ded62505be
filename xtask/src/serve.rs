//! `cargo xtask bench --serve`: the inference service under load. Runs `cryptgpu loadtest`
//! (three servers in one process over mutual TLS on loopback, and 1, 8, 64 concurrent
//! clients) once per emulated link between the servers, and writes every row to
//! `serve.json` and a table to `serve.md` under `target/bench/<timestamp>/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use xshell::Shell;

use crate::matrix::run::{commit, cryptgpu_binary, machine, rfc3339};

pub(crate) const HELP: &str = "\
cargo xtask bench --serve [OPTIONS]

Times the private inference service: three servers (one process, mutual TLS on loopback)
and 1, 8, 64 concurrent clients sending one-example queries (`cryptgpu loadtest`), once per
emulated link between the servers; p50/p99 latency, queries per second, bytes per query,
beside the one-shot job and the one-process batch rate. Writes serve.json and serve.md
under target/bench/<timestamp>/.

Options:
  --link LIST      none,lan,wan or BANDWIDTH,RTT pairs separated by ';' (default none,lan,wan)
  --clients LIST   concurrent clients of each run (default 1,8,64)
  --queries N      queries per client in each run (default 20)
  --backend B      the servers' device: cpu, cuda, wgpu (default cpu)
  --model NAME     a zoo model (default: the bundled MNIST LeNet)
  --chaos          inject faults (abandoned and malformed queries, a server restart)
  --quick          1 and 4 clients, 5 queries each, loopback only
  --out DIR        write there instead of target/bench/<timestamp>
  --binary PATH    run this cryptgpu binary instead of building one
";

/// Runs the service bench.
pub(crate) fn run(sh: &Shell, root: &Path, args: &mut pico_args::Arguments) -> Result<PathBuf> {
    let started = SystemTime::now();
    let quick = args.contains("--quick");
    let chaos = args.contains("--chaos");
    let links: String = args
        .opt_value_from_str("--link")?
        .unwrap_or_else(|| if quick { "none" } else { "none,lan,wan" }.to_string());
    let clients: String = args
        .opt_value_from_str("--clients")?
        .unwrap_or_else(|| if quick { "1,4" } else { "1,8,64" }.to_string());
    let queries: usize =
        args.opt_value_from_str("--queries")?
            .unwrap_or(if quick { 5 } else { 20 });
    let backend: String = args
        .opt_value_from_str("--backend")?
        .unwrap_or_else(|| "cpu".to_string());
    let model: Option<String> = args.opt_value_from_str("--model")?;
    let out: Option<PathBuf> = args.opt_value_from_str("--out")?;
    let binary: Option<PathBuf> = args.opt_value_from_str("--binary")?;
    let rest = args.clone().finish();
    if !rest.is_empty() {
        bail!("unexpected arguments {rest:?}\n\n{HELP}");
    }
    let binary = cryptgpu_binary(sh, root, binary)?;
    let link_list: Vec<&str> = if links.contains(';') {
        links.split(';').collect()
    } else {
        links.split(',').collect()
    };
    let mut rows: Vec<Value> = Vec::new();
    for link in link_list {
        println!("== loadtest: clients {clients}, link {link}");
        let mut command = Command::new(&binary);
        command.args(["loadtest", "--json", "--backend", &backend]);
        command.args(["--clients", &clients, "--queries", &queries.to_string()]);
        command.args(["--link", link]);
        if quick {
            command.args(["--compare-batch", "8"]);
        }
        if chaos {
            command.arg("--chaos");
        }
        if let Some(m) = &model {
            command.args(["--model", m]);
        }
        let output = command
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "cryptgpu loadtest (link {link}) failed: {}",
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let row: Value = serde_json::from_str(line).context("a loadtest row")?;
            let wrong = row.get("wrong").and_then(Value::as_u64).unwrap_or(0);
            ensure!(
                wrong == 0,
                "{wrong} answers differ from the plaintext model's (link {link}): {row}"
            );
            rows.push(row);
        }
    }
    let dir = match out {
        Some(dir) => dir,
        None => root
            .join("target/bench")
            .join(format!("{}-serve", rfc3339(started).replace(':', "-"))),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let record = serde_json::json!({
        "started": rfc3339(started),
        "machine": machine(),
        "commit": commit(sh),
        "rows": rows,
    });
    std::fs::write(
        dir.join("serve.json"),
        serde_json::to_string_pretty(&record)?,
    )?;
    let table = table(&rows);
    std::fs::write(dir.join("serve.md"), &table)?;
    print!("{table}");
    println!("wrote {}", dir.display());
    Ok(dir)
}

/// The rows as a Markdown table.
fn table(rows: &[Value]) -> String {
    let mut out = String::from(
        "| model | device | link | clients | answered/sent | wrong | errors | p50 | p99 | queries/s | mean batch | server bytes/query | rounds/batch | one-shot job | one-process rate |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let f = |r: &Value, k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    for r in rows {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        let errors = r
            .get("errors")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        out += &format!(
            "| {} | {} | {} | {} | {}/{} | {} | {} | {:.1} ms | {:.1} ms | {:.1} | {:.1} | {:.2} MB | {:.0} | {} | {} |\n",
            s("model"),
            s("device"),
            s("link"),
            f(r, "clients"),
            f(r, "answered"),
            f(r, "queries"),
            f(r, "wrong"),
            errors,
            1e3 * f(r, "p50_seconds"),
            1e3 * f(r, "p99_seconds"),
            f(r, "queries_per_second"),
            f(r, "mean_batch"),
            f(r, "server_bytes_per_query") / 1e6,
            f(r, "rounds_per_batch"),
            r.get("one_shot_seconds")
                .and_then(Value::as_f64)
                .map_or("-".into(), |v| format!("{v:.3} s")),
            r.get("batch_rate")
                .and_then(Value::as_f64)
                .map_or("-".into(), |v| format!(
                    "{v:.0}/s at batch {}",
                    f(r, "compare_batch")
                )),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_row_becomes_a_table_line() {
        let row = serde_json::json!({
            "model": "lenet", "device": "cpu", "link": "loopback", "clients": 8,
            "queries": 160, "answered": 160, "wrong": 0, "errors": [],
            "p50_seconds": 0.098, "p99_seconds": 0.115, "queries_per_second": 82.0,
            "mean_batch": 8.0, "server_bytes_per_query": 1742378.0, "rounds_per_batch": 70.0,
            "one_shot_seconds": 0.073, "batch_rate": 79.0, "compare_batch": 128
        });
        let t = super::table(&[row]);
        assert!(
            t.contains(
                "| lenet | cpu | loopback | 8 | 160/160 | 0 | 0 | 98.0 ms | 115.0 ms | 82.0 |"
            ),
            "{t}"
        );
        assert!(t.contains("1.74 MB"), "{t}");
        assert!(t.contains("79/s at batch 128"), "{t}");
    }
}
