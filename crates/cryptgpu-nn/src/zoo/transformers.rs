//! The zoo's transformers, at the sizes the papers benchmark: `bert-base` (12 post-norm
//! layers, width 768, 12 heads, 128 token ids of a 30,522-word vocabulary, pooler and a
//! 2-class head), `gpt2` (GPT-2 small: 12 pre-norm causal layers, width 768, 128 token ids
//! of 50,257 words, the next token's logits) and `vit-b16` (ViT-B/16 on 224×224 images:
//! 196 patches and a class token, 12 pre-norm layers, 1,000 classes). Parameters are
//! PyTorch-style names of these modules; for timing, their values are the zoo's seeded
//! initialisation.
//!
//! Attention is written as the private executor runs it best: the 1/√(head width) of the
//! scores is folded into the query projection's weights (an equivalent network, one
//! product fewer a layer), and GPT-2's causal mask is the public [`CausalMask`], local on
//! shares.

use super::{conv, linear};
use crate::error::Result;
use crate::layers::{
    add::Add, causal_mask::CausalMask, concat::Concat, constant::Constant, embedding::Embedding,
    gelu::Gelu, layer_norm::LayerNorm, matmul::MatMul, reshape::Reshape, slice::Slice,
    softmax::Softmax, tanh::Tanh, transpose::Transpose,
};
use crate::model::{GraphBuilder, Model, NodeId, Op};

/// The sizes of a transformer.
#[derive(Clone, Copy, Debug)]
struct Config {
    /// Tokens (or patches and the class token).
    length: usize,
    /// Width.
    dim: usize,
    /// Attention heads.
    heads: usize,
    /// Width of the MLP.
    mlp: usize,
    /// Blocks.
    layers: usize,
    /// Post-norm (BERT) or pre-norm (GPT-2, ViT).
    post_norm: bool,
    /// Causal attention.
    causal: bool,
}

const BASE: Config = Config {
    length: 128,
    dim: 768,
    heads: 12,
    mlp: 3072,
    layers: 12,
    post_norm: false,
    causal: false,
};

fn layer_norm(b: &mut GraphBuilder, name: String, dim: usize, x: NodeId) -> NodeId {
    let ln = LayerNorm {
        size: dim,
        epsilon: 1e-5,
    };
    b.add(name, ln, &[x])
}

/// Multi-head self-attention of `[N, L, D]`, batch first.
fn attention(b: &mut GraphBuilder, prefix: &str, c: Config, x: NodeId) -> NodeId {
    let (l, d, h) = (c.length, c.dim, c.heads);
    let hd = d / h;
    let heads = |b: &mut GraphBuilder, which: &str, perm: Vec<usize>| {
        let projected = b.add(format!("{prefix}.{which}"), linear(d, d), &[x]);
        let split = b.add(
            format!("{prefix}.{which}.split"),
            Reshape {
                shape: vec![l, h, hd],
            },
            &[projected],
        );
        b.add(
            format!("{prefix}.{which}.heads"),
            Transpose { perm },
            &[split],
        )
    };
    let q = heads(b, "query", vec![0, 2, 1, 3]);
    let kt = heads(b, "key", vec![0, 2, 3, 1]);
    let v = heads(b, "value", vec![0, 2, 1, 3]);
    let mut scores = b.add(format!("{prefix}.scores"), MatMul, &[q, kt]);
    if c.causal {
        scores = b.add(format!("{prefix}.causal"), CausalMask::default(), &[scores]);
    }
    let weights = b.add(format!("{prefix}.softmax"), Softmax::default(), &[scores]);
    let mixed = b.add(format!("{prefix}.mix"), MatMul, &[weights, v]);
    let merged = b.add(
        format!("{prefix}.merge"),
        Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &[mixed],
    );
    let flat = b.add(
        format!("{prefix}.flat"),
        Reshape { shape: vec![l, d] },
        &[merged],
    );
    b.add(format!("{prefix}.output"), linear(d, d), &[flat])
}

/// One block: attention and MLP, each with a residual connection and a LayerNorm before
/// (pre-norm) or after (post-norm).
fn block(b: &mut GraphBuilder, prefix: &str, c: Config, x: NodeId) -> NodeId {
    let d = c.dim;
    let add = |b: &mut GraphBuilder, name: String, a: NodeId, r: NodeId| {
        b.add(name, Op::Add(Add::default()), &[a, r])
    };
    let attn_in = if c.post_norm {
        x
    } else {
        layer_norm(b, format!("{prefix}.ln_1"), d, x)
    };
    let attn = attention(b, &format!("{prefix}.attn"), c, attn_in);
    let mut x = add(b, format!("{prefix}.attn.residual"), attn, x);
    if c.post_norm {
        x = layer_norm(b, format!("{prefix}.ln_1"), d, x);
    }
    let mlp_in = if c.post_norm {
        x
    } else {
        layer_norm(b, format!("{prefix}.ln_2"), d, x)
    };
    let up = b.add(format!("{prefix}.mlp.fc"), linear(d, c.mlp), &[mlp_in]);
    let act = b.add(format!("{prefix}.mlp.gelu"), Gelu::default(), &[up]);
    let down = b.add(format!("{prefix}.mlp.proj"), linear(c.mlp, d), &[act]);
    let x = add(b, format!("{prefix}.mlp.residual"), down, x);
    if c.post_norm {
        layer_norm(b, format!("{prefix}.ln_2"), d, x)
    } else {
        x
    }
}

/// Token `index` of `[N, L, D]` as `[N, D]`.
fn token(b: &mut GraphBuilder, name: &str, x: NodeId, index: usize) -> NodeId {
    let picked = b.add(
        format!("{name}.pick"),
        Slice {
            axis: 1,
            start: index,
            end: index + 1,
        },
        &[x],
    );
    b.add(
        name.to_owned(),
        Op::Flatten(crate::layers::flatten::Flatten),
        &[picked],
    )
}

/// Token embeddings (a lookup of the input's ids) plus learned position embeddings,
/// with the nodes named `[words, positions, sum]`.
fn embeddings(b: &mut GraphBuilder, names: [&str; 3], vocabulary: usize, c: Config) -> NodeId {
    let words = b.add(
        names[0],
        Embedding {
            vocabulary,
            dim: c.dim,
        },
        &[0],
    );
    let positions = b.add(
        names[1],
        Constant {
            shape: vec![c.length, c.dim],
        },
        &[0],
    );
    b.add(names[2], Op::Add(Add::default()), &[words, positions])
}

/// BERT-base: word and position embeddings, LayerNorm, 12 post-norm blocks, the pooler
/// (tanh of a linear map of the first token) and a 2-class head.
pub fn bert_base() -> Result<Model> {
    let c = Config {
        post_norm: true,
        ..BASE
    };
    let vocabulary = 30_522;
    let mut b = GraphBuilder::with_tokens(vocabulary);
    let names = [
        "embeddings.word_embeddings",
        "embeddings.position_embeddings",
        "embeddings.sum",
    ];
    let sum = embeddings(&mut b, names, vocabulary, c);
    let mut x = layer_norm(&mut b, "embeddings.LayerNorm".into(), c.dim, sum);
    for i in 0..c.layers {
        x = block(&mut b, &format!("encoder.layer.{i}"), c, x);
    }
    let first = token(&mut b, "pooler.first", x, 0);
    let pooled = b.add("pooler.dense", linear(c.dim, c.dim), &[first]);
    let pooled = b.add("pooler.activation", Op::Tanh(Tanh), &[pooled]);
    let logits = b.add("classifier", linear(c.dim, 2), &[pooled]);
    b.finish_zeroed("bert-base", &[c.length], logits)
}

/// GPT-2 small: token and position embeddings, 12 pre-norm causal blocks, the final
/// LayerNorm and the next token's logits from the last position.
pub fn gpt2() -> Result<Model> {
    let c = Config {
        causal: true,
        ..BASE
    };
    let vocabulary = 50_257;
    let mut b = GraphBuilder::with_tokens(vocabulary);
    let mut x = embeddings(&mut b, ["wte", "wpe", "embeddings.sum"], vocabulary, c);
    for i in 0..c.layers {
        x = block(&mut b, &format!("h.{i}"), c, x);
    }
    let x = layer_norm(&mut b, "ln_f".into(), c.dim, x);
    let last = token(&mut b, "last", x, c.length - 1);
    // GPT-2's head has no bias (it is the token embedding, transposed, in the original).
    let head = crate::layers::linear::Linear::new(c.dim, vocabulary, false);
    let logits = b.add("lm_head", Op::Linear(head), &[last]);
    b.finish_zeroed("gpt2", &[c.length], logits)
}

/// ViT-B/16: 16×16 patches of a 224×224 image by a strided convolution, the class token
/// and position embeddings, 12 pre-norm blocks, the final LayerNorm and a 1,000-class head
/// on the class token.
pub fn vit_b16() -> Result<Model> {
    let patches = 14 * 14;
    let c = Config {
        length: patches + 1,
        ..BASE
    };
    let mut b = GraphBuilder::new();
    let embedded = b.add("patch_embed.proj", conv(3, c.dim, 16, 16, 0, true), &[0]);
    let rows = b.add(
        "patch_embed.flat",
        Reshape {
            shape: vec![c.dim, patches],
        },
        &[embedded],
    );
    let tokens = b.add(
        "patch_embed.tokens",
        Transpose {
            perm: vec![0, 2, 1],
        },
        &[rows],
    );
    let cls = b.add(
        "cls_token",
        Constant {
            shape: vec![1, c.dim],
        },
        &[0],
    );
    let joined = b.add("tokens", Concat { axis: 1 }, &[cls, tokens]);
    let positions = b.add(
        "pos_embed",
        Constant {
            shape: vec![c.length, c.dim],
        },
        &[0],
    );
    let mut x = b.add("embedded", Op::Add(Add::default()), &[joined, positions]);
    for i in 0..c.layers {
        x = block(&mut b, &format!("blocks.{i}"), c, x);
    }
    let x = layer_norm(&mut b, "norm".into(), c.dim, x);
    let cls = token(&mut b, "head.cls", x, 0);
    let logits = b.add("head", linear(c.dim, 1000), &[cls]);
    b.finish_zeroed("vit-b16", &[3, 224, 224], logits)
}
