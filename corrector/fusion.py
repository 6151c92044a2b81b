"""Fusion operators: how stale remote features enter the local model, conditioned on the delay.

Every operator maps ``(local, remote, delay) -> fused`` at the local model's fusion stage::

    local   (N, C, h, w)  the local model's features of the current frame t
    remote  (N, D, h, w)  the heavy model's downlink features of frame t - delay, or None
    delay   (N,) int64    frames between the two, each in 0..tau_max

and is built so that *zero remote features mean no remote information*: the remote branch has
no biases and only homogeneous operations (a convolution, products with the remote projection,
an embedding masked by the remote map's support), so ``remote == 0`` contributes exactly 0.0
and ``fused`` equals ``local`` bit for bit. The same module therefore serves the local-only
fallback (``remote=None`` skips it).

Worked example, ``add`` (Dedelayed's fusion): with D = 8, C = 32 and delay 3,
``r = conv3x3(remote)`` (N, 32, h, w); the learned delay embedding ``e[3]`` (32,) is added at
every pixel the remote map covers (``(remote != 0).any(channel)``), and
``fused = local + r + e[3]``. The layers after the fusion stage have a receptive
field of several pixels at h × w, enough to carry an object's identity from where it was three
frames ago to where the local features see it now; the embedding tells them how far to look.

Registry: ``add`` (addition with a delay embedding), ``add-nodelay`` (the ablation: the same
without the embedding), ``gate`` (a sigmoid gate from local features, remote features and a
delay embedding decides per pixel and channel how much of the remote proposal to add).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import nn

from splitwire.corrector.errors import TaskConfigError

__all__ = [
    "FUSIONS",
    "AddFusion",
    "Fusion",
    "GateFusion",
    "fusion_names",
    "make_fusion",
]


class Fusion(nn.Module, ABC):
    """A fusion operator (see the module docstring for the contract).

    Args:
        channels: C, the local features' channels (and the output's).
        remote_channels: D, the remote features' channels.
        tau_max: the largest delay the operator is trained for (its embeddings have
            ``tau_max + 1`` entries).
    """

    def __init__(self, *, channels: int, remote_channels: int, tau_max: int) -> None:
        super().__init__()
        if tau_max < 0:
            raise TaskConfigError(f"tau_max {tau_max}: expected >= 0 frames")
        self.channels = channels
        self.remote_channels = remote_channels
        self.tau_max = tau_max

    def forward(
        self, local: torch.Tensor, remote: torch.Tensor | None, delay: torch.Tensor
    ) -> torch.Tensor:
        """Fuse; ``remote=None`` returns ``local`` itself (the local-only path)."""
        if remote is None:
            return local
        return local + self.contribution(local, remote, delay)

    @abstractmethod
    def contribution(
        self, local: torch.Tensor, remote: torch.Tensor, delay: torch.Tensor
    ) -> torch.Tensor:
        """What is added to ``local``: (N, C, h, w), exactly 0.0 where ``remote`` is all zero."""


def _remote_branch(remote_channels: int, hidden: int) -> nn.Conv2d:
    return nn.Conv2d(remote_channels, hidden, 3, padding=1, bias=False)


class AddFusion(Fusion):
    """Dedelayed's fusion: ``local + conv3x3(remote) + e[delay]`` (the embedding only where
    remote features are present).

    Args:
        delay_conditioning: False for the ablation without the delay embedding.
        (others as :class:`Fusion`)
    """

    def __init__(
        self,
        *,
        channels: int,
        remote_channels: int,
        tau_max: int,
        delay_conditioning: bool = True,
    ) -> None:
        super().__init__(channels=channels, remote_channels=remote_channels, tau_max=tau_max)
        self.project = _remote_branch(remote_channels, channels)
        self.delay_conditioning = delay_conditioning
        self.embedding = nn.Embedding(tau_max + 1, channels) if delay_conditioning else None
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, std=0.1)

    def contribution(
        self, local: torch.Tensor, remote: torch.Tensor, delay: torch.Tensor
    ) -> torch.Tensor:
        r = self.project(remote)  # (N, C, h, w), exactly 0 where remote is 0
        if self.embedding is None:
            return r
        # The embedding only where there is remote information, so zeros stay exactly zero.
        covered = (remote != 0).any(dim=1, keepdim=True)  # (N, 1, h, w) bool
        return r + covered * self.embedding(delay)[:, :, None, None]


class GateFusion(Fusion):
    """A delay-conditioned gate: ``local + sigmoid(conv1x1([local, v]) + e[delay]) * v`` with the
    remote proposal ``v = conv3x3(remote)``.

    The gate sees the current frame's local features, so it can open where an object is now and
    close where the stale features point at background.
    """

    def __init__(self, *, channels: int, remote_channels: int, tau_max: int) -> None:
        super().__init__(channels=channels, remote_channels=remote_channels, tau_max=tau_max)
        self.project = _remote_branch(remote_channels, channels)
        self.gate = nn.Conv2d(2 * channels, channels, 1)
        self.embedding = nn.Embedding(tau_max + 1, channels)
        nn.init.normal_(self.embedding.weight, std=0.1)

    def contribution(
        self, local: torch.Tensor, remote: torch.Tensor, delay: torch.Tensor
    ) -> torch.Tensor:
        v = self.project(remote)  # (N, C, h, w), exactly 0 where remote is 0
        g = self.gate(torch.cat((local, v), dim=1)) + self.embedding(delay)[:, :, None, None]
        return torch.sigmoid(g) * v


FUSIONS: dict[str, Callable[..., Fusion]] = {
    "add": AddFusion,
    "add-nodelay": lambda **kw: AddFusion(delay_conditioning=False, **kw),
    "gate": GateFusion,
}


def fusion_names() -> list[str]:
    """The registered fusion operators, sorted."""
    return sorted(FUSIONS)


def make_fusion(name: str, *, channels: int, remote_channels: int, tau_max: int) -> Fusion:
    """Build a registered fusion operator.

    Raises:
        TaskConfigError: an unknown name (the message lists the registered ones).
    """
    try:
        build = FUSIONS[name]
    except KeyError:
        raise TaskConfigError(
            f"unknown fusion {name!r}; available: {', '.join(fusion_names())}"
        ) from None
    return build(channels=channels, remote_channels=remote_channels, tau_max=tau_max)
