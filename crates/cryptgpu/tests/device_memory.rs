//! A network that does not fit in the parties' device memory: with a per-party limit in the
//! device-memory ledger too small for LeNet's first layer at batch 64, the in-process job
//! stops (no party hangs) with an error that names the layer and the bytes, classified as a
//! device failure, and every buffer is given back. The limit is process-wide, so this file
//! holds one test: its own process.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use cryptgpu::backend::memory;
use cryptgpu::device::Device;
use cryptgpu::failure::classify;
use cryptgpu::jobs::DataSpec;
use cryptgpu::local::{self, LocalRun};
use cryptgpu::manifest::Options;
use cryptgpu::nn::{NnError, zoo};
use cryptgpu::share::KeySource;
use cryptgpu::transport::FailureKind;

/// Private LeNet inference of `batch` synthetic examples in one batch on the CPU, three
/// parties in this process, on another thread; `None` if it has not ended after `limit`.
fn lenet_inference(batch: usize, limit: Duration) -> Option<anyhow::Result<local::Inference>> {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let model = zoo::build("lenet", zoo::Pooling::Max).expect("a zoo model");
        let options = Options {
            batch: Some(batch as u64),
            ..Options::default()
        };
        let data = DataSpec::Synthetic {
            limit: Some(batch),
            test_limit: None,
        };
        let run = LocalRun {
            device: Device::Cpu,
            keys: KeySource::InsecureSeeded(7),
            ..LocalRun::default()
        };
        let _ = done.send(local::infer(model, data, options, &run));
    });
    result.recv_timeout(limit).ok()
}

#[test]
fn a_layer_that_does_not_fit_stops_every_party_naming_it_and_its_bytes() {
    // LeNet's weights and the input fit in 40 MB per party; the parties' peaks at batch 64
    // are about 55 to 85 MB (the bench's `peak_device_bytes`), so a layer goes past it.
    let limit = 40_000_000;
    memory::set_party_limit(Some(limit));
    let start = Instant::now();
    let result = lenet_inference(64, Duration::from_secs(120)).expect("every party stopped");
    let error = result.expect_err("LeNet at batch 64 does not fit in 40 MB a party");
    let text = format!("{error:#}");
    let layer = error
        .chain()
        .find_map(|e| e.downcast_ref::<NnError>())
        .unwrap_or_else(|| panic!("not a network error: {text}"));
    let NnError::LayerOutOfMemory {
        node,
        op,
        pass,
        shortfall,
    } = layer
    else {
        panic!("not a layer out of memory: {text}");
    };
    let lenet = zoo::build("lenet", zoo::Pooling::Max).unwrap();
    let named = lenet
        .nodes()
        .iter()
        .find(|n| &n.name == node)
        .unwrap_or_else(|| panic!("`{node}` is no layer of LeNet: {text}"));
    assert_eq!(named.op.kind(), *op, "{text}");
    assert_eq!(*pass, "forward");
    assert_eq!(shortfall.limit, limit);
    assert!(!shortfall.by_driver);
    assert!(shortfall.requested > 0);
    assert!(
        shortfall.live + shortfall.requested > limit,
        "refused although it fit: {text}"
    );
    assert!(shortfall.party.is_some(), "{text}");
    assert!(
        text.contains(&format!("layer `{node}` ({op}, forward) does not fit: "))
            && text.contains("MB more device memory needed, party P")
            && text.contains("of its 40.0 MB limit"),
        "{text}"
    );
    // What the others are told: a device failure (the text stays with the party).
    assert_eq!(classify(&error), FailureKind::Device);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    // Every buffer of the failed job was given back.
    assert_eq!(memory::party_live_bytes(), [0; 3]);

    // Under the same limit a batch of 4 fits (its peaks are about 21 MB), and gives every
    // buffer back too.
    let done = lenet_inference(4, Duration::from_secs(120))
        .expect("the job ends")
        .expect("LeNet at batch 4 fits in 40 MB a party");
    memory::set_party_limit(None);
    assert_eq!(done.predictions.len(), 4);
    let peaks = memory::party_peak_bytes();
    assert!(peaks.iter().all(|&p| p > 0 && p <= limit), "{peaks:?}");
    assert_eq!(memory::party_live_bytes(), [0; 3]);
}
