"""The bare PyTorch tutorial: same data, model, loss, optimizer and epochs; torch only.

The baseline of benchmarks/bench.py. Data as linreg_exp makes it (seed 0): x ~ U(-10, 10),
noise ~ N(0, 1), y = 2 (x + noise) + 3; nn.Linear(1, 1) seeded with 0, L1 loss, SGD lr 0.01,
full batch, loss.item() every epoch. Intra-op threads as linreg_exp.train.set_cpu_threads sets
them (one below 200 000 points), so both sides run with the same threads.

    python benchmarks/bare_tutorial.py [num_data [epochs]]     # default: 1000 500
"""

import sys

import torch
from torch import nn

num_data = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 500
if num_data < 200_000:
    torch.set_num_threads(1)
generator = torch.Generator().manual_seed(0)
x = torch.rand(num_data, 1, generator=generator) * 20 - 10
y = 2.0 * (x + torch.randn(num_data, 1, generator=generator)) + 3.0
torch.manual_seed(0)
model = nn.Linear(1, 1)
loss_fn = nn.L1Loss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
losses = []
for _ in range(epochs):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"w={model.weight.item():.4f} b={model.bias.item():.4f} loss={losses[-1]:.4f}")
