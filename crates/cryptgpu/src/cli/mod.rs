//! The command line over the library: options ([`args`]), the in-process commands' reports
//! ([`in_process`]), `bench` ([`bench`]) and `party` ([`party`]).

pub(crate) mod args;
pub(crate) mod bench;
pub(crate) mod in_process;
pub(crate) mod party;
