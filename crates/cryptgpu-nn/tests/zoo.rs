//! The model zoo: every architecture builds with CryptGPU's shapes, parameter names and
//! counts match PyTorch's, pooling variants differ only in their pooling ops, and
//! initialisation is deterministic.

use cryptgpu_nn::layers::prelude::*;
use cryptgpu_nn::model::ParamKind;
use cryptgpu_nn::zoo::{self, Pooling};
use cryptgpu_nn::{NnError, Op};

fn trainable(name: &str) -> usize {
    zoo::architecture(name, Pooling::Avg)
        .unwrap()
        .num_trainable()
}

#[test]
fn small_models_have_pytorch_names_and_counts() {
    let lenet = zoo::build("lenet", Pooling::Avg).unwrap();
    let names: Vec<&str> = lenet.params.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "classifier.1.bias",
            "classifier.1.weight",
            "classifier.3.bias",
            "classifier.3.weight",
            "features.0.bias",
            "features.0.weight",
            "features.3.bias",
            "features.3.weight"
        ]
    );
    assert_eq!(lenet.params["features.3.weight"].shape(), &[50, 20, 5, 5]);
    assert_eq!(lenet.params["classifier.1.weight"].shape(), &[500, 800]);
    assert_eq!(lenet.num_trainable(), 431_080);
    assert_eq!(lenet.num_classes(), 10);
    assert_eq!(
        lenet.normalization,
        Some(cryptgpu_nn::data::Normalization::mnist())
    );

    let secureml = zoo::build("secureml", Pooling::Avg).unwrap();
    assert_eq!(
        secureml.num_trainable(),
        784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    );
}

#[test]
fn every_model_builds_with_its_input_and_classes() {
    let expected = [
        ("alexnet-cifar10", [3, 32, 32], 10),
        ("alexnet-tinyimagenet", [3, 64, 64], 200),
        ("vgg16-cifar10", [3, 32, 32], 10),
        ("vgg16-tinyimagenet", [3, 64, 64], 200),
    ];
    for (name, input, classes) in expected {
        for pooling in [Pooling::Avg, Pooling::Max] {
            let model = zoo::architecture(name, pooling).unwrap();
            assert_eq!(model.input_shape(), input, "{name}");
            assert_eq!(model.num_classes(), classes, "{name}");
            let shapes = model.shapes(2).unwrap();
            assert_eq!(shapes[model.output()], vec![2, classes], "{name}");
        }
    }
}

#[test]
fn imagenet_models_match_torchvision_parameter_counts() {
    // torchvision's counts for the ResNets; the AlexNet and VGG heads are CryptGPU's.
    assert_eq!(trainable("resnet18"), 11_689_512);
    assert_eq!(trainable("resnet34"), 21_797_672);
    assert_eq!(trainable("resnet50"), 25_557_032);
    assert_eq!(trainable("resnet101"), 44_549_160);
    assert_eq!(trainable("resnet152"), 60_192_808);
    let vgg_features = 14_714_688;
    let vgg_head = 4608 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000;
    assert_eq!(trainable("vgg16-imagenet"), vgg_features + vgg_head);
    let alex = zoo::architecture("alexnet-imagenet", Pooling::Avg).unwrap();
    assert_eq!(alex.params["fc_layers.2.weight"].shape(), &[4096, 9216]);
    assert_eq!(alex.num_classes(), 1000);
}

#[test]
fn resnet_layout_follows_torchvision() {
    let model = zoo::architecture("resnet50", Pooling::Avg).unwrap();
    let shapes = model.shapes(1).unwrap();
    let find = |name: &str| model.nodes().iter().position(|n| n.name == name).unwrap();
    // Stem: conv 7x7/2 (224 -> 112), CryptGPU's AvgPool2d(3, stride 2) (112 -> 55).
    assert_eq!(shapes[find("maxpool")], vec![1, 64, 55, 55]);
    assert_eq!(shapes[find("layer1.2.relu")], vec![1, 256, 55, 55]);
    assert_eq!(shapes[find("layer4.2.relu")], vec![1, 2048, 7, 7]);
    assert_eq!(
        model.params["layer3.0.downsample.0.weight"].shape(),
        &[1024, 512, 1, 1]
    );
    let bn_buffers = model
        .param_specs()
        .into_iter()
        .filter(|s| s.kind == ParamKind::Buffer)
        .count();
    assert_eq!(
        bn_buffers,
        2 * 53,
        "53 BatchNorms with two running statistics each"
    );
    let adds = model
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Add(_)))
        .count();
    assert_eq!(adds, 16, "one residual add per bottleneck");

    // Every BatchNorm directly follows a convolution, so inference folds all of them.
    let folded = zoo::architecture("resnet18", Pooling::Avg)
        .unwrap()
        .fold_batchnorm()
        .unwrap();
    assert!(
        !folded
            .nodes()
            .iter()
            .any(|n| matches!(n.op, Op::BatchNorm2d(BatchNorm2d { .. })))
    );
    assert_eq!(folded.shapes(1).unwrap()[folded.output()], vec![1, 1000]);
}

#[test]
fn pooling_choice_swaps_only_pooling_ops() {
    for name in ["lenet", "alexnet-tinyimagenet", "vgg16-cifar10", "resnet18"] {
        let avg = zoo::architecture(name, Pooling::Avg).unwrap();
        let max = zoo::architecture(name, Pooling::Max).unwrap();
        assert_eq!(avg.nodes().len(), max.nodes().len());
        let mut swapped = 0;
        for (a, m) in avg.nodes().iter().zip(max.nodes()) {
            match (&a.op, &m.op) {
                (Op::AvgPool2d(p), Op::MaxPool2d(q)) => {
                    assert_eq!(p.window, q.window);
                    swapped += 1;
                }
                (a, m) => assert_eq!(a, m, "{name}"),
            }
        }
        assert!(swapped > 0, "{name} has pooling layers to swap");
        assert_eq!(avg.shapes(1).unwrap(), max.shapes(1).unwrap());
    }
}

#[test]
fn unknown_model_lists_the_known_ones() {
    let err = zoo::build("resnet9000", Pooling::Avg).unwrap_err();
    assert!(matches!(err, NnError::UnknownModel { .. }));
    let message = err.to_string();
    assert!(message.contains("resnet9000"), "{message}");
    for known in zoo::MODELS {
        assert!(message.contains(known), "{message}");
    }
    assert!("maximum".parse::<Pooling>().is_err());
    assert_eq!("max".parse::<Pooling>().unwrap(), Pooling::Max);
}

#[test]
fn initialisation_is_deterministic_and_pytorch_like() {
    let a = zoo::build_seeded("lenet", Pooling::Avg, 5).unwrap();
    let b = zoo::build_seeded("lenet", Pooling::Avg, 5).unwrap();
    let c = zoo::build_seeded("lenet", Pooling::Avg, 6).unwrap();
    assert_eq!(a.params, b.params);
    assert_ne!(a.params["features.0.weight"], c.params["features.0.weight"]);
    for (name, fan_in) in [
        ("features.0.weight", 25.0),
        ("features.3.weight", 500.0),
        ("classifier.1.bias", 800.0),
    ] {
        let bound = 1.0 / f64::sqrt(fan_in);
        let values = a.params[name].data();
        let max = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            max <= bound && max > 0.9 * bound,
            "{name}: max {max}, bound {bound}"
        );
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.2 * bound, "{name}: mean {mean}");
    }
}

/// The zoo's transformers have their papers' sizes: ViT-B/16 exactly timm's
/// `vit_base_patch16_224` (86,567,656 values); BERT-base and GPT-2 small as Hugging Face's
/// (109,482,240 and 124,439,808), less the positions past the 128 tokens, BERT's token-type
/// embeddings, plus BERT's 2-class head and GPT-2's head (not tied to its embedding).
#[test]
fn transformers_have_their_papers_sizes() {
    let size = |name: &str| -> usize {
        zoo::architecture(name, zoo::Pooling::Avg)
            .unwrap()
            .param_specs()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    };
    assert_eq!(size("vit-b16"), 86_567_656);
    assert_eq!(
        size("bert-base"),
        109_482_240 - (512 - 128) * 768 - 2 * 768 + 768 * 2 + 2
    );
    assert_eq!(
        size("gpt2"),
        124_439_808 - (1024 - 128) * 768 + 768 * 50_257
    );
}
