"""Trains the small ViT of vit-mnist.onnx on MNIST in plaintext with PyTorch and exports it
with torch.onnx.export (legacy exporter, opset 17, dynamic batch).

    python -m venv /tmp/venv && /tmp/venv/bin/pip install torch onnx onnxruntime
    /tmp/venv/bin/python train_vit_mnist.py /path/to/mnist vit-mnist.onnx

The model (crates/cryptgpu-nn/tests/fixtures/transformers/transformer_models.py): 7x7
patches of a 28x28 image (16 tokens and a class token), width 32, 2 pre-norm blocks of 2
heads with exact GELU, nn.LayerNorm, a linear head; 28k parameters. The input is the
image scaled to [0, 1]; the normalisation (x - 0.1307) / 0.3081 is inside the graph.
Seed 1, 15 epochs of AdamW (lr 2e-3, cosine to 0, batch 128) on one thread.
"""
import gzip
import os
import sys

import numpy as np
import onnxruntime
import torch
import torch.nn as nn

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "../../cryptgpu-nn/tests/fixtures/transformers"))
from transformer_models import ViT  # noqa: E402


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


class Normalised(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner((x - 0.1307) / 0.3081)


def main():
    data, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(1)
    torch.set_num_threads(1)
    load = lambda s: (torch.tensor(idx(f"{data}/{s}-images-idx3-ubyte.gz"), dtype=torch.float32)
                      .div(255).unsqueeze(1), torch.tensor(idx(f"{data}/{s}-labels-idx1-ubyte.gz"),
                                                           dtype=torch.long))
    (xtr, ytr), (xte, yte) = load("train"), load("t10k")
    model = Normalised(ViT())
    epochs, batch = 15, 128
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * (len(xtr) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(len(xtr) // batch):
            j = perm[i * batch:(i + 1) * batch]
            loss = nn.functional.cross_entropy(model(xtr[j]), ytr[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {100 * acc:.2f} %",
              flush=True)
    torch.onnx.export(model, (xte[:3],), out, dynamo=False, input_names=["input"],
                      output_names=["output"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": xte.numpy()})
    correct = int((logits.argmax(1) == yte.numpy()).sum())
    print(f"onnxruntime on the MNIST test set: {correct} / {len(xte)} = "
          f"{100 * correct / len(xte):.2f} %")


if __name__ == "__main__":
    main()
