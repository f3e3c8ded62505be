//! Trains the zoo's LeNet (average pooling) in plaintext on full MNIST and saves f32
//! safetensors: how `crates/cryptgpu/assets/lenet-mnist.safetensors` was made.
//!
//! ```text
//! cargo run --release -p cryptgpu-nn --example train_lenet -- \
//!     --data /path/to/mnist --out crates/cryptgpu/assets/lenet-mnist.safetensors
//! ```
//!
//! Defaults (the shipped weights): seed 1, 8 epochs, batch 64, SGD lr 0.02, momentum 0.9,
//! weight decay 5e-4, learning rate divided by 10 for the last 2 epochs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use cryptgpu_nn::data::{Normalization, Split, load_mnist};
use cryptgpu_nn::optim::{Sgd, SgdConfig};
use cryptgpu_nn::{plain, weights, zoo};

fn main() -> Result<()> {
    let mut args = pico_args::Arguments::from_env();
    let data: PathBuf = args.value_from_str("--data")?;
    let out: PathBuf = args.value_from_str("--out")?;
    let seed: u64 = args.opt_value_from_str("--seed")?.unwrap_or(1);
    let epochs: u64 = args.opt_value_from_str("--epochs")?.unwrap_or(8);
    let batch: usize = args.opt_value_from_str("--batch")?.unwrap_or(64);
    let lr: f64 = args.opt_value_from_str("--lr")?.unwrap_or(0.02);
    let decay_epochs: u64 = args.opt_value_from_str("--decay-epochs")?.unwrap_or(2);
    let limit: Option<usize> = args.opt_value_from_str("--limit")?;

    let norm = Normalization::mnist();
    let train = load_mnist(&data, Split::Train, &norm, limit)?;
    let test = load_mnist(&data, Split::Test, &norm, None)?;
    let mut model = zoo::build_seeded("lenet", zoo::Pooling::Avg, seed)?;
    let config = SgdConfig::new(lr)
        .with_momentum(0.9)
        .with_weight_decay(5e-4);
    let mut sgd = Sgd::new(config);
    println!(
        "LeNet: {} trainable parameters; {} training and {} test images",
        model.num_trainable(),
        train.len(),
        test.len()
    );
    for epoch in 0..epochs {
        if epoch + decay_epochs == epochs {
            sgd.config.lr = lr / 10.0;
        }
        let start = Instant::now();
        let loss = plain::train_epoch(&mut model, &mut sgd, &train, batch, seed, epoch)?;
        let acc = plain::accuracy(&model, &test, 500)?;
        println!(
            "epoch {}: lr {} loss {loss:.4} test accuracy {:.2}% ({:.1} s)",
            epoch + 1,
            sgd.config.lr,
            acc * 100.0,
            start.elapsed().as_secs_f64()
        );
    }
    weights::save(&model, &out)?;
    let mut reloaded = zoo::build("lenet", zoo::Pooling::Avg)?;
    weights::load(&mut reloaded, &out)?;
    let acc = plain::accuracy(&reloaded, &test, 500)?;
    println!(
        "saved {}; test accuracy with the f32 weights: {:.2}%",
        out.display(),
        acc * 100.0
    );
    Ok(())
}
