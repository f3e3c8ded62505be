//! The files the `cryptgpu` CLI ships in `crates/cryptgpu/assets/`: the MNIST test sample
//! loads, and the shipped LeNet weights fit the zoo's LeNet and classify the sample as
//! well as recorded in the assets' README (99.2 %), and the shipped ViT classifies it
//! privately as in plaintext.

use std::path::PathBuf;

use cryptgpu_nn::data::{Normalization, Split, load_mnist};
use cryptgpu_nn::{plain, weights, zoo};

fn assets() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cryptgpu/assets");
    assert!(
        dir.join("lenet-mnist.safetensors").is_file(),
        "{} must hold lenet-mnist.safetensors and mnist-sample/ (see its README.md)",
        dir.display()
    );
    dir
}

#[test]
fn bundled_sample_is_the_first_thousand_test_digits() {
    let sample = load_mnist(
        &assets().join("mnist-sample"),
        Split::Test,
        &Normalization::mnist(),
        None,
    )
    .unwrap();
    assert_eq!(sample.len(), 1000);
    assert_eq!(sample.image_shape, [1, 28, 28]);
    // The first MNIST test labels are 7, 2, 1, 0, 4, 1, 4, 9, 5, 9.
    assert_eq!(&sample.labels[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    let mut counts = [0usize; 10];
    sample.labels.iter().for_each(|&l| counts[l] += 1);
    assert!(
        counts.iter().all(|&c| c > 60),
        "every digit appears: {counts:?}"
    );
}

#[test]
fn shipped_lenet_weights_classify_the_sample() {
    let dir = assets();
    let mut model = zoo::architecture("lenet", zoo::Pooling::Avg).unwrap();
    weights::load(&mut model, &dir.join("lenet-mnist.safetensors")).unwrap();
    let sample = load_mnist(
        &dir.join("mnist-sample"),
        Split::Test,
        &Normalization::mnist(),
        None,
    )
    .unwrap();
    let accuracy = plain::accuracy(&model, &sample, 250).unwrap();
    assert!(
        accuracy >= 0.985,
        "plaintext accuracy on the sample: {accuracy}"
    );
}

/// The shipped ViT (`vit-mnist.onnx`, a transformer trained by `train_vit_mnist.py`):
/// plaintext on the whole sample as recorded in the assets' README, and privately (three
/// parties, CPU backend) on its first 64 digits with the plaintext's predictions.
#[test]
fn shipped_vit_classifies_the_sample_privately_as_in_plaintext() {
    use cryptgpu_cpu::CpuBackend;
    use cryptgpu_nn::private::{SharedModel, share_model_input};
    use cryptgpu_share::{KeySource, Party};
    use cryptgpu_transport::{PartyId, run_local_3pc};

    let dir = assets();
    let model = cryptgpu_nn::onnx::import_file(&dir.join("vit-mnist.onnx")).unwrap();
    let sample = load_mnist(
        &dir.join("mnist-sample"),
        Split::Test,
        &Normalization::unit(),
        None,
    )
    .unwrap();
    let accuracy = plain::accuracy(&model, &sample, 250).unwrap();
    assert!(
        accuracy >= 0.97,
        "plaintext accuracy on the sample: {accuracy}"
    );
    let (x, _) = sample.range(0, 64).unwrap();
    let want = plain::classify(&model, &x).unwrap();
    let shape = x.shape().to_vec();
    let out = run_local_3pc(|t| {
        let mut p = Party::setup_with(
            CpuBackend::new(),
            t,
            cryptgpu_ring::FixedPoint::default(),
            KeySource::InsecureSeeded(3),
        )
        .unwrap();
        let shared = SharedModel::share(&mut p, &model, PartyId::P0).unwrap();
        let mine = (p.id() == PartyId::P1).then_some(&x);
        let sx = share_model_input(&mut p, &model, PartyId::P1, mine, &shape).unwrap();
        Ok::<_, cryptgpu_share::ShareError>(shared.classify(&mut p, &sx, PartyId::P1).unwrap())
    })
    .unwrap();
    let [_, classes, _] = out.map(|r| r.unwrap());
    assert_eq!(classes.unwrap(), want, "private and plaintext predictions");
}
