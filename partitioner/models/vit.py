"""A small Vision Transformer (Dosovitskiy et al., 2021); defaults are ViT-Tiny/16.

Shapes for a (N, 3, 224, 224) input with patch 16, dim 192 (T = (224 / 16)^2 = 196 patches)::

    patch_embed   conv16x16/16, flatten    -> (N, 196, 192)
    + cls token, + position embedding      -> (N, 197, 192)
    blocks        12 pre-norm encoder blocks -> (N, 197, 192)
    norm, head    on the cls token          -> (N, num_classes)

Attention uses ``scaled_dot_product_attention`` and reads the batch size from the input, so
``torch.export`` can capture the model with a dynamic batch dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VisionTransformer", "vit_tiny"]


class Attention(nn.Module):
    """Multi-head self-attention with one fused QKV projection."""

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape  # n is symbolic under a dynamic-batch export; t and d are static
        # (N, T, 3D) -> (N, T, 3, H, Dh) -> (3, N, H, T, Dh)
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (N, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, *, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT classifier over non-overlapping square patches, classifying from a cls token.

    Args:
        image_size: side of the (square) input image; fixed, because the position embedding is.
        patch_size: side of a patch; must divide ``image_size``.
        dim: embedding width; must be divisible by ``heads``.
        depth: number of encoder blocks.
        heads: attention heads per block.
        num_classes: size of the classifier output.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        dropout: dropout in attention and MLP (inactive in eval mode).
        in_channels: channels of the input image.

    Raises:
        ValueError: if the sizes do not divide as described.
    """

    def __init__(
        self,
        *,
        image_size: int = 224,
        patch_size: int = 16,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        num_classes: int = 1000,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if patch_size <= 0 or image_size % patch_size != 0:
            raise ValueError(
                f"ViT image_size must be a multiple of patch_size, got image_size={image_size}, "
                f"patch_size={patch_size}"
            )
        if heads <= 0 or dim % heads != 0:
            raise ValueError(f"ViT dim must be divisible by heads, got dim={dim}, heads={heads}")
        self.image_size = image_size
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(
            *(EncoderBlock(dim, heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"ViT expects {self.image_size}x{self.image_size} images, got "
                f"{tuple(x.shape[-2:])}; build it with image_size={x.shape[-1]} or resize the input"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, D, h, w) -> (N, T, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (N, 1, D)
        x = torch.cat((cls, x), dim=1) + self.pos_embed  # (N, T + 1, D)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])  # classify from the cls token: (N, D) -> (N, num_classes)


def vit_tiny(
    *,
    image_size: int = 224,
    patch_size: int = 16,
    dim: int = 192,
    depth: int = 12,
    heads: int = 3,
    num_classes: int = 1000,
    in_channels: int = 3,
) -> VisionTransformer:
    """Build ViT-Tiny/16 (5.7 M parameters at 224², 1000 classes) with random weights.

    Args:
        image_size: side of the square input.
        patch_size: side of a patch; must divide ``image_size``.
        dim: embedding width; must be divisible by ``heads``.
        depth: number of encoder blocks.
        heads: attention heads.
        num_classes: size of the classifier output.
        in_channels: channels of the input image.

    Returns:
        The model, in training mode.

    Raises:
        ValueError: if the sizes do not divide.
    """
    return VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        heads=heads,
        num_classes=num_classes,
        in_channels=in_channels,
    )
