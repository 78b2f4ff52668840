"""The bare PyTorch tutorial: same data, model, loss, optimizer and epochs; torch only."""

import torch
from torch import nn

torch.set_num_threads(1)
generator = torch.Generator().manual_seed(0)
x = torch.rand(1000, 1, generator=generator) * 20 - 10
y = 2.0 * (x + torch.randn(1000, 1, generator=generator)) + 3.0
torch.manual_seed(0)
model = nn.Linear(1, 1)
loss_fn = nn.L1Loss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
losses = []
for _ in range(500):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"w={model.weight.item():.4f} b={model.bias.item():.4f} loss={losses[-1]:.4f}")
