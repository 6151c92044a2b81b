"""A small image classifier in a file of its own, trained in a second or two on synthetic data:
a user's model (``path/net.py:build@weights.pt``) whose weights mean something, for the tests of
``--task`` and of re-planning. Not random weights: their agreements would say nothing."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from splitwire.partitioner.models import load_model

# Four classes: which quadrant of a 32x32 image holds a bright square.
SOURCE = """
import torch
from torch import nn


class QuadrantNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def build() -> nn.Module:
    return QuadrantNet()
"""
INPUT = (1, 3, 32, 32)
CLASSES = 4


def quadrant_images(count: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` noisy images, each with a bright 8x8 square in one quadrant (its label)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=g)
    images = torch.randn((count, *INPUT[1:]), generator=g) * 0.5
    for i, label in enumerate(labels.tolist()):
        top = (label // 2) * 16 + int(torch.randint(0, 8, (), generator=g))
        left = (label % 2) * 16 + int(torch.randint(0, 8, (), generator=g))
        images[i, :, top : top + 8, left : left + 8] += 2.0
    return images, labels


def trained_classifier(folder: Path) -> str:
    """Write the model's file into ``folder``, train it, save its weights; returns its spec.

    Raises:
        AssertionError: it did not learn (held-out accuracy below 90 %).
    """
    source = folder / "quadrant_net.py"
    source.write_text(SOURCE)
    model = load_model(f"{source}:build").module
    model.train()
    images, labels = quadrant_images(256, seed=0)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        for start in range(0, len(images), 64):
            loss = F.cross_entropy(model(images[start : start + 64]), labels[start : start + 64])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    test_images, test_labels = quadrant_images(256, seed=1)
    with torch.no_grad():
        accuracy = float((model(test_images).argmax(1) == test_labels).float().mean())
    assert accuracy >= 0.9, f"the test classifier did not learn: held-out accuracy {accuracy}"
    weights = folder / "quadrant_net.pt"
    torch.save(model.state_dict(), weights)
    return f"{source}:build@{weights}"
