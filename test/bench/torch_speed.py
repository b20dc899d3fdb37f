#!/usr/bin/python3
"""PyTorch yardstick for bench_nn: training and evaluation samples/s of the
same models (mlp:128 and the NIID-Bench CNN), batch 64, SGD with momentum,
on random 1x28x28 inputs, with a given number of threads.

    torch_speed.py THREADS SECONDS

prints lines "torch <model> train <samples/s>" and "torch <model> eval <samples/s>".
Debian's python3-torch uses OpenBLAS when libopenblas0 is installed.
"""
import sys
import time

import torch
import torch.nn as nn


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def best_rate(fn, seconds, samples_per_call):
    fn()  # warm-up
    best = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < 0.2:
            fn()
            n += samples_per_call
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    B = 64
    x = torch.rand(B, 1, 28, 28)
    y = torch.randint(0, 10, (B,))
    xe = torch.rand(256, 1, 28, 28)
    for name, make in (("mlp:128", mlp), ("cnn", cnn)):
        model = make()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        def evaluate():
            with torch.no_grad():
                model(xe).argmax(1)

        print(f"torch {name} train {best_rate(step, seconds, B):.0f}")
        print(f"torch {name} eval {best_rate(evaluate, seconds, 256):.0f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
