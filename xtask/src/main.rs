//! `cargo xtask`: the project's automation. `test` runs exactly what CI runs; `bench` runs
//! the criterion benches and prints one table of what they measured.

mod bench;
mod tidy;

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

const HELP: &str = "\
cargo xtask <command>

Commands:
  test            what CI runs: rustfmt check, clippy -D warnings, every test of the workspace
  bench [FILTER]  run the criterion benches (optionally only ids matching FILTER), then print a table
  bench-table     print the table of the last bench run without running anything
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
        "bench" => {
            let filter: Option<String> = args.opt_free_from_str()?;
            bench::run(&sh, filter.as_deref())
        }
        "bench-table" => bench::print_table(&project_root()),
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

/// The workspace root (the parent of `xtask/`).
fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
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
    Ok(())
}
