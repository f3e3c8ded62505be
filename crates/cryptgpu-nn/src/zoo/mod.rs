//! The model zoo: the exact architectures CryptGPU benchmarks (its `scripts/network.py` and
//! `scripts/benchmark.py`), plus the SecureML network.
//!
//! | name | input | layers |
//! |---|---|---|
//! | `lenet` | 1×28×28 | conv 1→20 k5, ReLU, pool 2; conv 20→50 k5, ReLU, pool 2; fc 800→500, ReLU, fc 500→10 |
//! | `secureml` | 1×28×28 | flatten, fc 784→128, ReLU, fc 128→128, ReLU, fc 128→10 |
//! | `alexnet-cifar10` | 3×32×32 | CryptGPU's AlexNet features; fc 256→256→256→10 |
//! | `alexnet-tinyimagenet` | 3×64×64 | features; pool 2; fc 1024→1024→1024→200 |
//! | `alexnet-imagenet` | 3×224×224 | features; pool 4; fc 9216→4096→4096→1000 |
//! | `vgg16-cifar10` | 3×32×32 | torchvision VGG-16 features (pools average); fc 512→256→256→10 |
//! | `vgg16-tinyimagenet` | 3×64×64 | features; pool 2; fc 512→512→512→200 |
//! | `vgg16-imagenet` | 3×224×224 | features; pool 2; fc 4608→4096→4096→1000 (no ReLUs, as in CryptGPU) |
//! | `resnet18` … `resnet152` | 3×224×224 | torchvision ResNets, stem pool 3×3 stride 2 without padding |
//! | `bert-base` | 128 token ids | BERT-base: 12 post-norm layers, width 768, 12 heads, pooler, 2 classes ([`transformers`]) |
//! | `gpt2` | 128 token ids | GPT-2 small: 12 pre-norm causal layers, width 768, the next token's 50,257 logits |
//! | `vit-b16` | 3×224×224 | ViT-B/16: 196 patches and a class token, 12 pre-norm layers, 1,000 classes |
//!
//! Pooling: [`Pooling::Avg`] is CryptGPU's choice (every pooling layer of `network.py` is
//! an `AvgPool2d`, and `benchmark.py` swaps each ResNet's stem max-pool for
//! `AvgPool2d(3, stride=2)`); [`Pooling::Max`] puts a `MaxPool2d` with the same window in
//! each of those places, so both variants have the same shapes. A ResNet's final global
//! average pool stays an average.
//!
//! Parameter names are those of the PyTorch modules (`features.0.weight`,
//! `vgg.features.28.bias`, `layer3.5.downsample.1.running_var`, `fc.weight`), so a PyTorch
//! `state_dict` exported to safetensors loads as it is.

use cryptgpu_backend::{Conv2dParams, Pool2dParams};

use crate::data::Normalization;
use crate::error::{NnError, Result};
use crate::layers::{
    add::Add, avg_pool::AvgPool2d, batchnorm::BatchNorm2d, conv::Conv2d, flatten::Flatten,
    global_avg_pool::GlobalAvgPool, linear::Linear, max_pool::MaxPool2d, relu::Relu,
};
use crate::model::{GraphBuilder, Model, NodeId, Op, Sequential};

pub mod transformers;

/// Which pooling a zoo model uses where CryptGPU's has a pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Max-pooling (needs comparisons in private; costlier).
    Max,
    /// Average pooling, as CryptGPU benchmarks.
    #[default]
    Avg,
}

impl std::str::FromStr for Pooling {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "max" => Ok(Pooling::Max),
            "avg" | "average" => Ok(Pooling::Avg),
            other => Err(NnError::InvalidArgument(format!(
                "unknown pooling `{other}`; expected `max` or `avg`"
            ))),
        }
    }
}

/// The names [`build`] knows.
pub const MODELS: &[&str] = &[
    "lenet",
    "secureml",
    "alexnet-cifar10",
    "alexnet-tinyimagenet",
    "alexnet-imagenet",
    "vgg16-cifar10",
    "vgg16-tinyimagenet",
    "vgg16-imagenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "bert-base",
    "gpt2",
    "vit-b16",
];

/// The seed [`build`] initialises parameters from.
pub const DEFAULT_SEED: u64 = 0;

/// The zoo model `name` with `pooling`, parameters initialised from [`DEFAULT_SEED`].
pub fn build(name: &str, pooling: Pooling) -> Result<Model> {
    build_seeded(name, pooling, DEFAULT_SEED)
}

/// The zoo model `name` with `pooling`, parameters initialised from `seed`
/// (see [`Model::init_params`]).
pub fn build_seeded(name: &str, pooling: Pooling, seed: u64) -> Result<Model> {
    let mut model = architecture(name, pooling)?;
    model.init_params(seed);
    Ok(model)
}

/// The zoo model `name` with `pooling` and every parameter zero: the architecture alone,
/// cheap to build (zeroed memory is allocated lazily), for shapes, counts, or weights
/// loaded next.
pub fn architecture(name: &str, pooling: Pooling) -> Result<Model> {
    let mut model = match name {
        "lenet" => lenet(pooling),
        "secureml" => secureml(),
        "alexnet-cifar10" => alexnet(Dataset::Cifar10, pooling),
        "alexnet-tinyimagenet" => alexnet(Dataset::TinyImageNet, pooling),
        "alexnet-imagenet" => alexnet(Dataset::ImageNet, pooling),
        "vgg16-cifar10" => vgg16(Dataset::Cifar10, pooling),
        "vgg16-tinyimagenet" => vgg16(Dataset::TinyImageNet, pooling),
        "vgg16-imagenet" => vgg16(Dataset::ImageNet, pooling),
        "resnet18" => resnet(Block::Basic, [2, 2, 2, 2], name, pooling),
        "resnet34" => resnet(Block::Basic, [3, 4, 6, 3], name, pooling),
        "resnet50" => resnet(Block::Bottleneck, [3, 4, 6, 3], name, pooling),
        "resnet101" => resnet(Block::Bottleneck, [3, 4, 23, 3], name, pooling),
        "resnet152" => resnet(Block::Bottleneck, [3, 8, 36, 3], name, pooling),
        "bert-base" => return transformers::bert_base(),
        "gpt2" => return transformers::gpt2(),
        "vit-b16" => transformers::vit_b16(),
        _ => {
            return Err(NnError::UnknownModel {
                name: name.to_owned(),
                known: MODELS.iter().map(|s| s.to_string()).collect(),
            });
        }
    }?;
    if model.normalization.is_none() {
        model.normalization = Some(Normalization::imagenet());
    }
    Ok(model)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dataset {
    Cifar10,
    TinyImageNet,
    ImageNet,
}

impl Dataset {
    fn input_shape(self) -> [usize; 3] {
        match self {
            Dataset::Cifar10 => [3, 32, 32],
            Dataset::TinyImageNet => [3, 64, 64],
            Dataset::ImageNet => [3, 224, 224],
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar10",
            Dataset::TinyImageNet => "tinyimagenet",
            Dataset::ImageNet => "imagenet",
        }
    }

    fn normalization(self) -> Normalization {
        match self {
            Dataset::Cifar10 => Normalization::cifar10(),
            _ => Normalization::imagenet(),
        }
    }
}

/// A convolution with a square kernel, stride and padding.
pub fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> Op {
    Op::Conv2d(Conv2d::new(
        in_channels,
        out_channels,
        [kernel, kernel],
        Conv2dParams::new(stride, padding),
        bias,
    ))
}

/// A linear layer with bias.
pub fn linear(in_features: usize, out_features: usize) -> Op {
    Op::Linear(Linear::new(in_features, out_features, true))
}

/// A square pooling window of the kind `pooling` picks.
pub fn pool(pooling: Pooling, kernel: usize, stride: usize, padding: usize) -> Op {
    let params = Pool2dParams::new(kernel, stride).with_padding(padding);
    match pooling {
        Pooling::Max => Op::MaxPool2d(MaxPool2d::new(params)),
        Pooling::Avg => Op::AvgPool2d(AvgPool2d::new(params)),
    }
}

/// A BatchNorm with PyTorch's defaults (`eps = 1e-5`, `momentum = 0.1`).
pub fn batchnorm(channels: usize) -> Op {
    Op::BatchNorm2d(BatchNorm2d {
        channels,
        eps: 1e-5,
        momentum: 0.1,
    })
}

fn lenet(pooling: Pooling) -> Result<Model> {
    let mut b = GraphBuilder::new();
    let input = b.input();
    let mut features = Sequential::new(&mut b, "features", input);
    features
        .push(conv(1, 20, 5, 1, 0, true))
        .push(Op::Relu(Relu))
        .push(pool(pooling, 2, 2, 0))
        .push(conv(20, 50, 5, 1, 0, true))
        .push(Op::Relu(Relu))
        .push(pool(pooling, 2, 2, 0));
    let last = features.last();
    let mut classifier = Sequential::new(&mut b, "classifier", last);
    classifier
        .push(Op::Flatten(Flatten))
        .push(linear(800, 500))
        .push(Op::Relu(Relu))
        .push(linear(500, 10));
    let out = classifier.last();
    let mut model = b.finish_zeroed("lenet", &[1, 28, 28], out)?;
    model.normalization = Some(Normalization::mnist());
    Ok(model)
}

fn secureml() -> Result<Model> {
    let mut b = GraphBuilder::new();
    let flat = b.add("flatten", Op::Flatten(Flatten), &[0]);
    let fc1 = b.add("fc1", linear(784, 128), &[flat]);
    let relu1 = b.add("relu1", Op::Relu(Relu), &[fc1]);
    let fc2 = b.add("fc2", linear(128, 128), &[relu1]);
    let relu2 = b.add("relu2", Op::Relu(Relu), &[fc2]);
    let fc3 = b.add("fc3", linear(128, 10), &[relu2]);
    let mut model = b.finish_zeroed("secureml", &[1, 28, 28], fc3)?;
    model.normalization = Some(Normalization::mnist());
    Ok(model)
}

fn alexnet(dataset: Dataset, pooling: Pooling) -> Result<Model> {
    let mut b = GraphBuilder::new();
    let input = b.input();
    let mut features = Sequential::new(&mut b, "features", input);
    features
        .push(conv(3, 96, 11, 4, 9, true))
        .push(Op::Relu(Relu))
        .push(pool(pooling, 3, 2, 0))
        .push(conv(96, 256, 5, 1, 1, true))
        .push(Op::Relu(Relu))
        .push(pool(pooling, 2, 1, 0))
        .push(conv(256, 384, 3, 1, 1, true))
        .push(Op::Relu(Relu))
        .push(conv(384, 384, 3, 1, 1, true))
        .push(Op::Relu(Relu))
        .push(conv(384, 256, 3, 1, 1, true))
        .push(Op::Relu(Relu));
    let last = features.last();
    let mut fc = Sequential::new(&mut b, "fc_layers", last);
    let (hidden, classes) = match dataset {
        Dataset::Cifar10 => {
            fc.push(Op::Flatten(Flatten)).push(linear(256, 256));
            (256, 10)
        }
        Dataset::TinyImageNet => {
            fc.push(pool(pooling, 2, 2, 0))
                .push(Op::Flatten(Flatten))
                .push(linear(1024, 1024));
            (1024, 200)
        }
        Dataset::ImageNet => {
            fc.push(pool(pooling, 4, 4, 0))
                .push(Op::Flatten(Flatten))
                .push(linear(9216, 4096));
            (4096, 1000)
        }
    };
    fc.push(Op::Relu(Relu))
        .push(linear(hidden, hidden))
        .push(Op::Relu(Relu))
        .push(linear(hidden, classes));
    let out = fc.last();
    let name = format!("alexnet-{}", dataset.suffix());
    let mut model = b.finish_zeroed(&name, &dataset.input_shape(), out)?;
    model.normalization = Some(dataset.normalization());
    Ok(model)
}

fn vgg16(dataset: Dataset, pooling: Pooling) -> Result<Model> {
    // torchvision's configuration "D"; 0 marks a pooling layer.
    const CONFIG: [usize; 18] = [
        64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
    ];
    let mut b = GraphBuilder::new();
    let input = b.input();
    let mut features = Sequential::new(&mut b, "vgg.features", input);
    let mut channels = 3;
    for width in CONFIG {
        if width == 0 {
            features.push(pool(pooling, 2, 2, 0));
        } else {
            features
                .push(conv(channels, width, 3, 1, 1, true))
                .push(Op::Relu(Relu));
            channels = width;
        }
    }
    let last = features.last();
    let mut classifier = Sequential::new(&mut b, "classifier", last);
    match dataset {
        Dataset::Cifar10 => {
            classifier
                .push(Op::Flatten(Flatten))
                .push(linear(512, 256))
                .push(Op::Relu(Relu))
                .push(linear(256, 256))
                .push(Op::Relu(Relu))
                .push(linear(256, 10));
        }
        Dataset::TinyImageNet => {
            classifier
                .push(pool(pooling, 2, 2, 0))
                .push(Op::Flatten(Flatten))
                .push(linear(512, 512))
                .push(Op::Relu(Relu))
                .push(linear(512, 512))
                .push(Op::Relu(Relu))
                .push(linear(512, 200));
        }
        Dataset::ImageNet => {
            classifier
                .push(pool(pooling, 2, 2, 0))
                .push(Op::Flatten(Flatten))
                .push(linear(4608, 4096))
                .push(linear(4096, 4096))
                .push(linear(4096, 1000));
        }
    }
    let out = classifier.last();
    let name = format!("vgg16-{}", dataset.suffix());
    let mut model = b.finish_zeroed(&name, &dataset.input_shape(), out)?;
    model.normalization = Some(dataset.normalization());
    Ok(model)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Basic,
    Bottleneck,
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

fn resnet(block: Block, layers: [usize; 4], name: &str, pooling: Pooling) -> Result<Model> {
    let mut b = GraphBuilder::new();
    let conv1 = b.add("conv1", conv(3, 64, 7, 2, 3, false), &[0]);
    let bn1 = b.add("bn1", batchnorm(64), &[conv1]);
    let relu = b.add("relu", Op::Relu(Relu), &[bn1]);
    let mut x = b.add("maxpool", pool(pooling, 3, 2, 0), &[relu]);
    let mut inplanes = 64;
    for (stage, &blocks) in layers.iter().enumerate() {
        let planes = 64 << stage;
        for index in 0..blocks {
            let stride = if stage > 0 && index == 0 { 2 } else { 1 };
            let prefix = format!("layer{}.{index}", stage + 1);
            x = residual_block(&mut b, &prefix, x, block, inplanes, planes, stride);
            inplanes = planes * block.expansion();
        }
    }
    let pooled = b.add("avgpool", Op::GlobalAvgPool(GlobalAvgPool), &[x]);
    let flat = b.add("flatten", Op::Flatten(Flatten), &[pooled]);
    let fc = b.add("fc", linear(inplanes, 1000), &[flat]);
    b.finish_zeroed(name, &[3, 224, 224], fc)
}

/// One torchvision residual block (BasicBlock or Bottleneck, stride on the 3×3 conv).
fn residual_block(
    b: &mut GraphBuilder,
    prefix: &str,
    input: NodeId,
    block: Block,
    inplanes: usize,
    planes: usize,
    stride: usize,
) -> NodeId {
    let out_channels = planes * block.expansion();
    let conv_bn = |b: &mut GraphBuilder, i: usize, from: NodeId, op: Op, channels: usize| {
        let c = b.add(format!("{prefix}.conv{i}"), op, &[from]);
        b.add(format!("{prefix}.bn{i}"), batchnorm(channels), &[c])
    };
    let body = match block {
        Block::Basic => {
            let bn1 = conv_bn(
                b,
                1,
                input,
                conv(inplanes, planes, 3, stride, 1, false),
                planes,
            );
            let relu = b.add(format!("{prefix}.relu1"), Op::Relu(Relu), &[bn1]);
            conv_bn(b, 2, relu, conv(planes, planes, 3, 1, 1, false), planes)
        }
        Block::Bottleneck => {
            let bn1 = conv_bn(b, 1, input, conv(inplanes, planes, 1, 1, 0, false), planes);
            let relu1 = b.add(format!("{prefix}.relu1"), Op::Relu(Relu), &[bn1]);
            let bn2 = conv_bn(
                b,
                2,
                relu1,
                conv(planes, planes, 3, stride, 1, false),
                planes,
            );
            let relu2 = b.add(format!("{prefix}.relu2"), Op::Relu(Relu), &[bn2]);
            conv_bn(
                b,
                3,
                relu2,
                conv(planes, out_channels, 1, 1, 0, false),
                out_channels,
            )
        }
    };
    let shortcut = if stride != 1 || inplanes != out_channels {
        let c = b.add(
            format!("{prefix}.downsample.0"),
            conv(inplanes, out_channels, 1, stride, 0, false),
            &[input],
        );
        b.add(
            format!("{prefix}.downsample.1"),
            batchnorm(out_channels),
            &[c],
        )
    } else {
        input
    };
    let sum = b.add(
        format!("{prefix}.add"),
        Op::Add(Add::default()),
        &[body, shortcut],
    );
    b.add(format!("{prefix}.relu"), Op::Relu(Relu), &[sum])
}
