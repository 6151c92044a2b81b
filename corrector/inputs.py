"""How a camera frame becomes a model input, for the heavy and the local model alike.

``input = (pixels / 255 - mean) / std`` per channel with ImageNet's statistics, which is also
what ``splitwire plan`` assumes for image inputs by default, so a plan of ``zoo:texture_unet``
preprocesses frames the way the corrector was trained.
"""

from __future__ import annotations

import torch

from splitwire.corrector.errors import TaskConfigError

__all__ = ["MEAN", "STD", "preprocess"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_SCALE = (1.0 / (255.0 * torch.tensor(STD))).view(1, 3, 1, 1)
_SHIFT = (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1)


def preprocess(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (N, 3, H, W) or one frame (3, H, W) → float32 (N, 3, H, W).

    Raises:
        TaskConfigError: not uint8, or not 3 channels.
    """
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
        raise TaskConfigError(
            f"frames: expected uint8 (N, 3, H, W) or (3, H, W), got {frames.dtype} "
            f"{tuple(frames.shape)}; pass the camera's frames unconverted"
        )
    # x / 255 - mean) / std as one multiply-add per channel: x * scale + shift
    return torch.addcmul(_SHIFT, frames.float(), _SCALE)
