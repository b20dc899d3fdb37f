#!/usr/bin/python3
"""PyTorch reference for fedmq's engine: the same training, written the
usual PyTorch way, on the same data and — for FedAvg — the same partition.

    torch_ref.py central MODEL EPOCHS [--normalize]
    torch_ref.py fedavg MODEL ROUNDS PARTITION_FILE

MODEL is mlp:128 or cnn; PARTITION_FILE comes from
`fedmq-train fedavg --save-partition FILE` (one line of sample indices per
party). Batch 64, SGD lr 0.01 momentum 0.9, pixels in [0,1], PyTorch's
default initialisation, a fresh optimizer (momentum buffer) per party and
round, sample-weighted averaging. Prints lines in fedmq-train's format:
"epoch=E test_acc=A" or "round=R test_acc=A".
"""
import gzip
import sys

import numpy as np
import torch
import torch.nn as nn

DIR = "/usr/share/datasets/fashion-mnist"


def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load(kind):
    x = idx(f"{DIR}/{kind}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    y = idx(f"{DIR}/{kind}-labels-idx1-ubyte.gz", 8)
    return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(y, dtype=torch.long)


def make(spec):
    if spec == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    if spec.startswith("mlp:"):
        layers, d = [nn.Flatten()], 784
        for h in map(int, spec[4:].split(",")):
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        return nn.Sequential(*layers, nn.Linear(d, 10))
    raise SystemExit(f"torch_ref: unknown model {spec}")


def train(model, x, y, epochs):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            loss_fn(model(x[b]), y[b]).backward()
            opt.step()


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main():
    torch.set_num_threads(1)
    torch.manual_seed(1)
    mode, spec, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    if "--normalize" in sys.argv:
        m, s = xtr.mean(), xtr.std()
        xtr, xte = (xtr - m) / s, (xte - m) / s
    model = make(spec)
    if mode == "central":
        for e in range(1, n + 1):
            train(model, xtr, ytr, 1)
            print(f"epoch={e} test_acc={accuracy(model, xte, yte):.4f}", flush=True)
        return
    parts = [torch.tensor([int(t) for t in line.split()], dtype=torch.long)
             for line in open(sys.argv[4]) if line.strip()]
    total = sum(len(p) for p in parts)
    for r in range(1, n + 1):
        g = {k: v.clone() for k, v in model.state_dict().items()}
        acc = {k: torch.zeros_like(v) for k, v in g.items()}
        for p in parts:
            model.load_state_dict(g)
            train(model, xtr[p], ytr[p], 1)
            for k, v in model.state_dict().items():
                acc[k] += v * (len(p) / total)
        model.load_state_dict(acc)
        print(f"round={r} test_acc={accuracy(model, xte, yte):.4f}", flush=True)


if __name__ == "__main__":
    main()
