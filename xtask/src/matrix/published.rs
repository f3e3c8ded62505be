//! The published figures of CryptGPU, Piranha and Falcon (`benches/published.json`).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use super::schema::PublishedFigure;

/// The systems the report has a column for, in column order.
pub(crate) const SYSTEMS: [&str; 4] = ["CryptGPU", "Piranha", "Falcon", "Falcon (measured here)"];

/// The modes a figure (and a measured cell) can have.
pub(crate) const MODES: [&str; 2] = ["inference", "training"];

/// Reads and checks the published figures in `path` (a JSON array of [`PublishedFigure`]).
///
/// Fails, naming the file, when it is missing, is not valid JSON (with the line), or holds a
/// figure with an unknown system or mode, an empty network, a zero batch, or a time or byte
/// count that is not a positive finite number.
pub(crate) fn load(path: &Path) -> Result<Vec<PublishedFigure>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the published figures {}", path.display()))?;
    parse(&text).with_context(|| format!("bad published figures in {}", path.display()))
}

/// Parses and checks the text of a published-figures file.
fn parse(text: &str) -> Result<Vec<PublishedFigure>> {
    let figures: Vec<PublishedFigure> = serde_json::from_str(text).map_err(|e| {
        anyhow!(
            "not a JSON array of published figures (line {}, column {}): {e}",
            e.line(),
            e.column()
        )
    })?;
    for (i, figure) in figures.iter().enumerate() {
        check(figure).with_context(|| {
            format!(
                "figure {} of {} ({} {} {})",
                i + 1,
                figures.len(),
                figure.system,
                figure.network,
                figure.mode
            )
        })?;
    }
    Ok(figures)
}

/// Checks one figure's values.
fn check(figure: &PublishedFigure) -> Result<()> {
    if !SYSTEMS.contains(&figure.system.as_str()) {
        bail!(
            "unknown system `{}` (the report has columns for {})",
            figure.system,
            SYSTEMS.join(", ")
        );
    }
    if !MODES.contains(&figure.mode.as_str()) {
        bail!(
            "unknown mode `{}` (expected `inference` or `training`)",
            figure.mode
        );
    }
    if figure.network.trim().is_empty() {
        bail!("empty network name");
    }
    if figure.batch == 0 {
        bail!("batch is 0; it must be positive");
    }
    if !(figure.seconds.is_finite() && figure.seconds > 0.0) {
        bail!(
            "seconds is {}; it must be a positive finite number",
            figure.seconds
        );
    }
    if let Some(bytes) = figure.bytes
        && !(bytes.is_finite() && bytes > 0.0)
    {
        bail!("bytes is {bytes}; it must be a positive finite number or null");
    }
    Ok(())
}

/// The figures for one cell: those of `network` in `mode`, in file order.
pub(crate) fn for_cell<'a>(
    figures: &'a [PublishedFigure],
    network: &str,
    mode: &str,
) -> Vec<&'a PublishedFigure> {
    figures
        .iter()
        .filter(|f| f.network == network && f.mode == mode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETWORKS: [&str; 3] = ["lenet", "alexnet-cifar10", "vgg16-cifar10"];

    fn one(fields: &str) -> String {
        format!(
            r#"[
  {{"system": "CryptGPU", "network": "lenet", "mode": "inference", "batch": 1,
    "seconds": 0.38, "bytes": 3e6, "link": "lan", "hardware": "V100",
    "source": "paper", "note": null{fields}}}
]"#
        )
    }

    #[test]
    fn the_real_file_has_every_system_and_network() {
        let path = crate::project_root().join("benches/published.json");
        let figures = load(&path).expect("benches/published.json loads");
        for system in ["CryptGPU", "Piranha", "Falcon"] {
            for network in NETWORKS {
                for mode in MODES {
                    let found = for_cell(&figures, network, mode)
                        .into_iter()
                        .filter(|f| f.system == system)
                        .count();
                    assert_eq!(found, 1, "{system} {network} {mode}");
                }
            }
        }
        let measured: Vec<_> = figures
            .iter()
            .filter(|f| f.system == "Falcon (measured here)")
            .map(|f| {
                (
                    f.network.as_str(),
                    f.mode.as_str(),
                    f.batch,
                    f.link.as_str(),
                )
            })
            .collect();
        assert_eq!(
            measured,
            [
                ("lenet", "inference", 128, "loopback"),
                ("lenet", "training", 128, "loopback"),
                ("alexnet-cifar10", "inference", 128, "loopback"),
            ]
        );
        for f in &figures {
            if f.system == "Piranha" {
                let note = f.note.as_deref().unwrap_or_default();
                assert!(note.contains("constant"), "Piranha note: {note}");
            }
            if f.system == "Falcon (measured here)" {
                assert!(f.note.is_some(), "the measured figures say where they hold");
            }
        }
    }

    #[test]
    fn a_good_figure_parses() {
        let figures = parse(&one("")).unwrap();
        assert_eq!(figures.len(), 1);
        assert_eq!(figures[0].bytes, Some(3e6));
        assert_eq!(for_cell(&figures, "lenet", "inference").len(), 1);
        assert!(for_cell(&figures, "lenet", "training").is_empty());
        assert!(for_cell(&figures, "vgg16-cifar10", "inference").is_empty());
    }

    #[test]
    fn a_missing_file_names_it() {
        let path = std::env::temp_dir().join("cryptgpu-xtask-no-such-published.json");
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("cannot read"), "{err}");
        assert!(err.contains("no-such-published"), "{err}");
    }

    #[test]
    fn bad_json_gives_the_line() {
        let text = one("").replace("\"batch\": 1,", "\"batch\": 1");
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_numbers_and_modes_are_refused() {
        let cases = [
            (one("").replace("0.38", "-0.38"), "seconds"),
            (one("").replace("0.38", "0"), "seconds"),
            (one("").replace("3e6", "0"), "bytes"),
            (one("").replace("\"batch\": 1", "\"batch\": 0"), "batch"),
            (one("").replace("inference", "serving"), "unknown mode"),
            (one("").replace("CryptGPU", "SecureNN"), "unknown system"),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(err.contains("figure 1 of 1"), "{err}");
        }
    }
}
