//! Writes the first `--count` (default 1000) MNIST test images and labels as gzip idx
//! files: how `crates/cryptgpu/assets/mnist-sample/` was made.
//!
//! ```text
//! cargo run -p cryptgpu-nn --example make_mnist_sample -- \
//!     --data /path/to/mnist --out crates/cryptgpu/assets/mnist-sample
//! ```

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cryptgpu_nn::data::{Split, encode_idx, mnist_files, parse_idx, read_maybe_gzip};
use flate2::{Compression, write::GzEncoder};

fn main() -> Result<()> {
    let mut args = pico_args::Arguments::from_env();
    let data: PathBuf = args.value_from_str("--data")?;
    let out: PathBuf = args.value_from_str("--out")?;
    let count: usize = args.opt_value_from_str("--count")?.unwrap_or(1000);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let (images_name, labels_name) = mnist_files(Split::Test);
    for name in [images_name, labels_name] {
        let path = [data.join(name), data.join(format!("{name}.gz"))]
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| format!("{name}[.gz] not found in {}", data.display()))?;
        let idx = parse_idx(&read_maybe_gzip(&path)?, &path)?;
        if idx.dims[0] < count {
            bail!("{} holds only {} examples", path.display(), idx.dims[0]);
        }
        let per_example: usize = idx.dims[1..].iter().product();
        let mut dims = idx.dims.clone();
        dims[0] = count;
        let bytes = encode_idx(&dims, &idx.data[..count * per_example])?;
        let target = out.join(format!("{name}.gz"));
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&bytes)?;
        std::fs::write(&target, gz.finish()?)
            .with_context(|| format!("writing {}", target.display()))?;
        println!("wrote {} ({count} examples)", target.display());
    }
    Ok(())
}
