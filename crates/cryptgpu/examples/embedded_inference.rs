//! A whole private inference job embedded in another program: the model owner's LeNet and
//! the data owner's digits go in, the three parties run in this process on the best device
//! there is, and the program gets the classes the data owner learns, with the job's figures.

use cryptgpu::jobs::DataSpec;
use cryptgpu::local::{self, LocalRun};
use cryptgpu::manifest::Options;

fn main() -> anyhow::Result<()> {
    let model = cryptgpu::demo::lenet()?;
    let digits = cryptgpu::demo::mnist_sample()?.truncate(8);
    let labels = digits.labels.clone();
    let options = Options {
        batch: Some(8),
        ..Options::default()
    };
    let result = local::infer(
        model,
        DataSpec::Loaded(digits),
        options,
        &LocalRun::default(),
    )?;
    let s = &result.summary;
    println!(
        "private classes {:?} (labels {labels:?})",
        result.predictions
    );
    println!(
        "{} digits on {} in {:.2} s, {} rounds, P0 sent {} bytes; {:.0}% agree with plaintext",
        s.samples,
        s.backend,
        s.seconds,
        s.rounds,
        s.bytes[0],
        100.0 * s.agreement
    );
    assert_eq!(result.predictions.len(), 8);
    assert_eq!(
        s.agreement, 1.0,
        "private and plaintext LeNet agree on these digits"
    );
    Ok(())
}

#[test]
fn the_example_runs() {
    main().unwrap();
}
