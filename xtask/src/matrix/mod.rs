//! The bench matrix of `cargo xtask bench`: runs `cryptgpu bench` once per cell, then writes
//! `results.json`, `results.md` and SVG plots under `target/bench/<timestamp>/`.

pub(crate) mod plots;
pub(crate) mod published;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod schema;
