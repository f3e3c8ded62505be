//! The files the `cryptgpu` CLI ships in `crates/cryptgpu/assets/`: the MNIST test sample
//! loads, and the shipped LeNet weights fit the zoo's LeNet and classify the sample as
//! well as recorded in the assets' README (99.2 %).

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
