//! `cargo xtask`: the project's automation. `test` runs exactly what CI runs; `bench` runs
//! the bench matrix (networks × modes × backends × links, [`matrix`]); `criterion` runs the
//! op-level criterion benches and prints one table of what they measured.

#![forbid(unsafe_code)]

mod bench;
#[cfg(test)]
mod imports;
mod matrix;
mod serve;
mod tidy;

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

const HELP: &str = "\
cargo xtask <command>

Commands:
  test               what CI runs: rustfmt check, clippy -D warnings, every test of the
                     workspace, then the bench matrix and the service load test at --quick
                     sizes
  bench [OPTIONS]    the bench matrix: private inference and training per network, backend
                     and emulated link; results.json, results.md and plots under
                     target/bench/<timestamp>/ (`cargo xtask bench --help`)
  bench --serve [OPTIONS]
                     the inference service under load: p50/p99 latency and queries per
                     second of 1, 8, 64 clients (`cargo xtask bench --serve --help`)
  bench-report --out DIR RESULTS.json...
                     merge bench matrix results (e.g. a CPU run and a GPU machine's) into
                     one results.json, results.md and plots, running nothing
  criterion [FILTER] the op-level criterion benches (optionally only ids matching FILTER),
                     then a table of what they measured
  criterion-table    print the table of the last criterion run without running anything
";

fn main() -> Result<()> {
    let mut args = pico_args::Arguments::from_env();
    let Some(command) = args.subcommand()? else {
        print!("{HELP}");
        return Ok(());
    };
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match command.as_str() {
        "test" => test(&sh),
        "bench" if args.contains("--serve") => {
            if args.contains(["-h", "--help"]) {
                print!("{}", serve::HELP);
                return Ok(());
            }
            serve::run(&sh, &project_root(), &mut args).map(|_| ())
        }
        "bench" => {
            if args.contains(["-h", "--help"]) {
                print!("{}", matrix::run::HELP);
                return Ok(());
            }
            let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
            let matrix_args = matrix::run::MatrixArgs::parse(&mut args, command)?;
            matrix::run::run(&sh, &project_root(), &matrix_args).map(|_| ())
        }
        "bench-report" => {
            let out: std::path::PathBuf = args.value_from_str("--out")?;
            let inputs: Vec<std::path::PathBuf> = args
                .finish()
                .into_iter()
                .map(std::path::PathBuf::from)
                .collect();
            let published = project_root().join("benches/published.json");
            matrix::run::report(&inputs, &published, &out)
        }
        "criterion" => {
            let filter: Option<String> = args.opt_free_from_str()?;
            bench::run(&sh, filter.as_deref())
        }
        "criterion-table" => bench::print_table(&project_root()),
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

/// The workspace root (the parent of `xtask/`).
/// Where the build put it, or else (an xtask binary copied to another machine, run from a
/// checkout there) the current directory.
fn project_root() -> std::path::PathBuf {
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    if built.join("Cargo.toml").exists() {
        return built;
    }
    std::env::current_dir().unwrap_or(built)
}

fn test(sh: &Shell) -> Result<()> {
    println!("== rustfmt");
    cmd!(sh, "cargo fmt --all -- --check").run()?;
    println!("== clippy");
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --locked -- -D warnings"
    )
    .run()?;
    println!("== tests");
    cmd!(sh, "cargo test --workspace --locked").run()?;
    // The bench matrix at tiny sizes, so its code cannot rot (writes under target/bench/).
    println!("== bench matrix (--quick)");
    let args = matrix::run::MatrixArgs::parse(
        &mut pico_args::Arguments::from_vec(vec!["--quick".into()]),
        "bench --quick (from `cargo xtask test`)".into(),
    )?;
    matrix::run::run(sh, &project_root(), &args)?;
    // The service's load test at a tiny size, with faults, through the same binary.
    println!("== service load test (--quick --chaos)");
    let binary = project_root().join("target/release/cryptgpu");
    serve::run(
        sh,
        &project_root(),
        &mut pico_args::Arguments::from_vec(vec![
            "--quick".into(),
            "--chaos".into(),
            "--binary".into(),
            binary.into(),
        ]),
    )?;
    Ok(())
}
