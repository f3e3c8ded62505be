//! What the data owner receives, written to `--out`: a CSV, JSON or `.npy` file chosen by
//! the extension, written atomically.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::atomic::write_private_atomically;
use super::npy;

/// What was revealed to the data owner for each example.
#[derive(Clone, Debug, PartialEq)]
pub enum Revealed {
    /// The predicted class of each example.
    Classes(Vec<usize>),
    /// The logits, `[N, classes]` row-major.
    Logits {
        /// The values, one row per example.
        values: Vec<f64>,
        /// Number of classes (the row length).
        classes: usize,
    },
    /// The class probabilities, `[N, classes]` row-major.
    Probabilities {
        /// The values, one row per example.
        values: Vec<f64>,
        /// Number of classes (the row length).
        classes: usize,
    },
}

impl Revealed {
    /// The scores if some were revealed: the values, the row length, the CSV column
    /// prefix and the JSON key.
    fn scores(&self) -> Option<(&[f64], usize, &'static str, &'static str)> {
        match self {
            Revealed::Classes(_) => None,
            Revealed::Logits { values, classes } => Some((values, *classes, "logit", "logits")),
            Revealed::Probabilities { values, classes } => {
                Some((values, *classes, "prob", "probabilities"))
            }
        }
    }

    /// The predicted class of each example: the class itself, or the arg-max of its row of
    /// scores (the first maximum wins; NaN never wins).
    pub fn predicted_classes(&self) -> Vec<usize> {
        match self {
            Revealed::Classes(classes) => classes.clone(),
            Revealed::Logits { values, classes } | Revealed::Probabilities { values, classes } => {
                if *classes == 0 {
                    return Vec::new();
                }
                values
                    .chunks_exact(*classes)
                    .map(|row| {
                        let mut best = 0;
                        for (k, &v) in row.iter().enumerate() {
                            if v > row[best] || (row[best].is_nan() && !v.is_nan()) {
                                best = k;
                            }
                        }
                        best
                    })
                    .collect()
            }
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            Revealed::Classes(classes) => classes.len(),
            Revealed::Logits { values, classes } | Revealed::Probabilities { values, classes } => {
                values.len().checked_div(*classes).unwrap_or(0)
            }
        }
    }

    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that the scores make whole rows.
    fn check(&self) -> Result<()> {
        if let Some((values, classes, ..)) = self.scores() {
            ensure!(
                classes > 0 && values.len() % classes == 0,
                "{} scores do not make rows of {classes} classes",
                values.len()
            );
        }
        Ok(())
    }
}

/// The output formats, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `.csv`.
    Csv,
    /// `.json`.
    Json,
    /// `.npy`.
    Npy,
}

/// Writes what the data owner received, one row per example named by `names`, in the
/// format of `path`'s extension (in any case):
///
/// - `.csv`: a header `input,class` (then `logit_0,...` or `prob_0,...`), one row per
///   example; names quoted CSV-style when needed, floats in Rust's shortest round-trip
///   form;
/// - `.json`: an array of `{"input": name, "class": c}` objects, with `"logits"` or
///   `"probabilities"` arrays when revealed;
/// - `.npy`: the classes as `<i8` of shape `[N]`, or the logits or probabilities as `<f8`
///   of shape `[N, K]`.
///
/// Written atomically: an interrupted or failed write leaves no partial file.
pub fn write_predictions(path: &Path, names: &[String], revealed: &Revealed) -> Result<()> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
        Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
        Some(e) if e.eq_ignore_ascii_case("npy") => Format::Npy,
        _ => bail!(
            "cannot write predictions to {}: unknown format; name the file .csv, .json or .npy",
            path.display()
        ),
    };
    let bytes = encode(format, names, revealed)
        .with_context(|| format!("cannot write predictions to {}", path.display()))?;
    // The data owner's result is as secret as its inputs: readable by its owner only.
    write_private_atomically(path, &bytes)
}

/// Encodes the predictions in `format`.
fn encode(format: Format, names: &[String], revealed: &Revealed) -> Result<Vec<u8>> {
    revealed.check()?;
    ensure!(
        names.len() == revealed.len(),
        "{} input names for {} predictions",
        names.len(),
        revealed.len()
    );
    let classes = revealed.predicted_classes();
    Ok(match format {
        Format::Csv => csv(names, &classes, revealed).into_bytes(),
        Format::Json => json_lines(names, &classes, revealed)?.into_bytes(),
        Format::Npy => match revealed.scores() {
            None => {
                let classes = classes
                    .iter()
                    .map(|&c| i64::try_from(c))
                    .collect::<Result<Vec<i64>, _>>()
                    .context("a class does not fit in int64")?;
                npy::encode_i64(&[classes.len()], &classes)
            }
            Some((values, k, ..)) => npy::encode_f64(&[values.len() / k, k], values),
        },
    })
}

/// A CSV field: quoted, with quotes doubled, when it holds a comma, quote or line break.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// The CSV text.
fn csv(names: &[String], classes: &[usize], revealed: &Revealed) -> String {
    let mut out = String::from("input,class");
    let scores = revealed.scores();
    if let Some((_, k, prefix, _)) = scores {
        for j in 0..k {
            let _ = write!(out, ",{prefix}_{j}");
        }
    }
    out.push('\n');
    for (i, (name, class)) in names.iter().zip(classes).enumerate() {
        out.push_str(&csv_field(name));
        let _ = write!(out, ",{class}");
        if let Some((values, k, ..)) = scores {
            for v in &values[i * k..(i + 1) * k] {
                let _ = write!(out, ",{v}");
            }
        }
        out.push('\n');
    }
    out
}

/// The JSON text: an array with one object per line.
fn json_lines(names: &[String], classes: &[usize], revealed: &Revealed) -> Result<String> {
    let scores = revealed.scores();
    let mut out = String::from("[");
    for (i, (name, class)) in names.iter().zip(classes).enumerate() {
        let mut object = json!({ "input": name, "class": class });
        if let (Some((values, k, _, key)), Value::Object(map)) = (scores, &mut object) {
            map.insert(key.to_owned(), json!(values[i * k..(i + 1) * k]));
        }
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        out.push_str(&serde_json::to_string(&object).context("cannot encode JSON")?);
    }
    out.push_str(if classes.is_empty() { "]\n" } else { "\n]\n" });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::npy::NpyData;
    use crate::files::test_dir;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Splits CSV text into rows of fields, undoing the quoting.
    fn split_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(ch) = chars.next() {
            match (quoted, ch) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, _) => field.push(ch),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, _) => field.push(ch),
            }
        }
        assert!(field.is_empty() && row.is_empty(), "text ends in a newline");
        rows
    }

    #[test]
    fn arg_max_takes_the_first_maximum() {
        let logits = Revealed::Logits {
            values: vec![1.0, 3.0, 3.0, -1.0, -2.0, -1.0, f64::NAN, 0.0, 5.0],
            classes: 3,
        };
        assert_eq!(logits.len(), 3);
        assert_eq!(logits.predicted_classes(), [1, 0, 2]);
        let probabilities = Revealed::Probabilities {
            values: vec![0.2, 0.8],
            classes: 2,
        };
        assert_eq!(probabilities.predicted_classes(), [1]);
        assert_eq!(Revealed::Classes(vec![4, 2]).predicted_classes(), [4, 2]);
        let empty = Revealed::Logits {
            values: vec![],
            classes: 0,
        };
        assert_eq!(empty.len(), 0);
        assert!(empty.predicted_classes().is_empty());
    }

    #[test]
    fn csv_round_trips() {
        let dir = test_dir("predictions-csv");
        let path = dir.join("out.CSV");
        let values = vec![0.1, -2.5e-300, 1.0 / 3.0, 7.0, f64::MAX, -0.0];
        let revealed = Revealed::Logits {
            values: values.clone(),
            classes: 3,
        };
        let list = names(&["plain.png", "a, \"quoted\"\nname.jpg"]);
        write_predictions(&path, &list, &revealed).unwrap();
        let rows = split_csv(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(rows[0], ["input", "class", "logit_0", "logit_1", "logit_2"]);
        assert_eq!(rows.len(), 3);
        for (i, row) in rows[1..].iter().enumerate() {
            assert_eq!(row[0], list[i]);
            assert_eq!(row[1], revealed.predicted_classes()[i].to_string());
            let parsed: Vec<f64> = row[2..].iter().map(|v| v.parse().unwrap()).collect();
            assert_eq!(parsed, values[3 * i..3 * i + 3]);
            assert!(
                parsed
                    .iter()
                    .zip(&values[3 * i..])
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }

        let path = dir.join("classes.csv");
        // An old file readable by everyone is replaced by one readable by its owner only.
        std::fs::write(&path, b"old").unwrap();
        write_predictions(&path, &names(&["0", "1"]), &Revealed::Classes(vec![7, 3])).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "input,class\n0,7\n1,3\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "predictions are the data owner's secret"
            );
        }

        let revealed = Revealed::Probabilities {
            values: vec![0.25, 0.75],
            classes: 2,
        };
        write_predictions(&path, &names(&["x"]), &revealed).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "input,class,prob_0,prob_1\nx,1,0.25,0.75\n"
        );
    }

    #[test]
    fn json_round_trips() {
        let dir = test_dir("predictions-json");
        let path = dir.join("out.json");
        let list = names(&["a.png", "b \"q\".png"]);
        let revealed = Revealed::Probabilities {
            values: vec![0.1, 0.9, 0.6, 0.4],
            classes: 2,
        };
        write_predictions(&path, &list, &revealed).unwrap();
        let parsed: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            parsed,
            json!([
                {"input": "a.png", "class": 1, "probabilities": [0.1, 0.9]},
                {"input": "b \"q\".png", "class": 0, "probabilities": [0.6, 0.4]},
            ])
        );

        write_predictions(&path, &list, &Revealed::Classes(vec![2, 5])).unwrap();
        let parsed: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            parsed,
            json!([{"input": "a.png", "class": 2}, {"input": "b \"q\".png", "class": 5}])
        );

        let revealed = Revealed::Logits {
            values: vec![-1.5, 2.0],
            classes: 2,
        };
        write_predictions(&path, &list[..1], &revealed).unwrap();
        let parsed: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            parsed,
            json!([{"input": "a.png", "class": 1, "logits": [-1.5, 2.0]}])
        );

        write_predictions(&path, &[], &Revealed::Classes(vec![])).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[]\n");
    }

    #[test]
    fn npy_round_trips() {
        let dir = test_dir("predictions-npy");
        let path = dir.join("out.npy");
        write_predictions(
            &path,
            &names(&["a", "b", "c"]),
            &Revealed::Classes(vec![3, 0, 9]),
        )
        .unwrap();
        let array = npy::read(&path).unwrap();
        assert_eq!(array.dtype, npy::Dtype::I64);
        assert_eq!(array.shape, [3]);
        assert_eq!(array.data, NpyData::I64(vec![3, 0, 9]));

        let values = vec![0.5, -1.0, 2.0, 1e-10, 3.0, 4.0];
        let revealed = Revealed::Logits {
            values: values.clone(),
            classes: 3,
        };
        write_predictions(&path, &names(&["a", "b"]), &revealed).unwrap();
        let array = npy::read(&path).unwrap();
        assert_eq!(array.dtype, npy::Dtype::F64);
        assert_eq!(array.shape, [2, 3]);
        assert_eq!(array.data, NpyData::F64(values));
    }

    #[test]
    fn bad_requests_are_errors_and_leave_no_file() {
        let dir = test_dir("predictions-bad");
        let classes = Revealed::Classes(vec![1, 2]);
        for name in ["out.txt", "out", "out.csv.gz"] {
            let path = dir.join(name);
            let m = format!(
                "{:#}",
                write_predictions(&path, &names(&["a", "b"]), &classes).unwrap_err()
            );
            assert!(m.contains(name) && m.contains(".csv, .json or .npy"), "{m}");
            assert!(!path.exists());
        }
        let path = dir.join("out.csv");
        std::fs::write(&path, "old").unwrap();
        let m = format!(
            "{:#}",
            write_predictions(&path, &names(&["a"]), &classes).unwrap_err()
        );
        assert!(
            m.contains("out.csv") && m.contains("1 input names for 2 predictions"),
            "{m}"
        );
        let ragged = Revealed::Logits {
            values: vec![1.0; 5],
            classes: 2,
        };
        let m = format!(
            "{:#}",
            write_predictions(&path, &names(&["a", "b"]), &ragged).unwrap_err()
        );
        assert!(m.contains("rows of 2 classes"), "{m}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        let no_classes = Revealed::Probabilities {
            values: vec![],
            classes: 0,
        };
        assert!(write_predictions(&path, &[], &no_classes).is_err());
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1, "only out.csv");
    }
}
