//! Runs three parties on three threads and collects their results, turning panics into
//! errors.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::{PartyId, TransportError};

/// A party's failure, stamped with the order in which failures happened.
struct Failure {
    order: usize,
    party: PartyId,
    error: TransportError,
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `party_main` for P0, P1 and P2 on three scoped threads. A party that panics or
/// returns an error is a failure; if any party fails, the earliest failure is returned (a
/// panic as [`TransportError::PartyPanicked`]), with the others noted in a panic's message.
pub(crate) fn run_three<T, F>(party_main: F) -> Result<[T; 3], TransportError>
where
    T: Send,
    F: Fn(PartyId) -> Result<T, TransportError> + Sync,
{
    let clock = AtomicUsize::new(0);
    let run = |party: PartyId| -> Result<T, Failure> {
        let result = catch_unwind(AssertUnwindSafe(|| party_main(party)));
        let error = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error,
            Err(payload) => TransportError::PartyPanicked {
                party,
                message: panic_message(payload.as_ref()),
            },
        };
        Err(Failure {
            order: clock.fetch_add(1, Ordering::SeqCst),
            party,
            error,
        })
    };
    let results: [Result<T, Failure>; 3] = thread::scope(|scope| {
        let handles = PartyId::ALL.map(|party| {
            thread::Builder::new()
                .name(format!("cryptgpu-{party}"))
                .spawn_scoped(scope, move || run(party))
        });
        handles.map(|handle| match handle {
            Ok(handle) => handle.join().unwrap_or_else(|payload| {
                // `run` catches panics, so this only happens if the catching itself failed.
                Err(Failure {
                    order: usize::MAX,
                    party: PartyId::P0,
                    error: TransportError::Config(panic_message(payload.as_ref())),
                })
            }),
            Err(source) => Err(Failure {
                order: 0,
                party: PartyId::P0,
                error: TransportError::LocalIo {
                    context: "spawning a party thread".to_string(),
                    source,
                },
            }),
        })
    });
    let [a, b, c] = results;
    match (a, b, c) {
        (Ok(a), Ok(b), Ok(c)) => Ok([a, b, c]),
        (a, b, c) => {
            let mut failures: Vec<Failure> =
                [a.err(), b.err(), c.err()].into_iter().flatten().collect();
            failures.sort_by_key(|f| f.order);
            let others: Vec<String> = failures
                .iter()
                .skip(1)
                .map(|f| format!("{} then failed: {}", f.party, f.error))
                .collect();
            let Some(mut first) = failures.into_iter().next() else {
                return Err(TransportError::Config(
                    "a party failed without an error".to_string(),
                ));
            };
            if let TransportError::PartyPanicked { message, .. } = &mut first.error {
                for note in others {
                    message.push_str("; ");
                    message.push_str(&note);
                }
            }
            Err(first.error)
        }
    }
}
