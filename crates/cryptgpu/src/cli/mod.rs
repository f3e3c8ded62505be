//! The command line over the library: options ([`args`]), the in-process commands' reports
//! ([`in_process`]), `bench` ([`bench`]), `party` ([`party`]), and `serve`, `query` and
//! `loadtest` ([`serve`]).

pub(crate) mod args;
pub(crate) mod bench;
pub(crate) mod in_process;
pub(crate) mod party;
pub(crate) mod serve;
