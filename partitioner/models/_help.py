"""The one description of the spec grammar that error messages append."""

from __future__ import annotations

from splitwire.partitioner.models.zoo import pretrained_names, zoo_names


def spec_forms() -> str:
    """The accepted spec forms, with the current zoo names, as an indented block of lines."""
    return (
        "accepted model specs:\n"
        f"  zoo:NAME                  a reference model with seeded random weights; NAME is one "
        f"of {', '.join(zoo_names())}\n"
        "  path/to/file.py:callable  a Python file whose callable() returns a torch.nn.Module\n"
        "  path/to/model.pt2         a torch.export archive written by torch.export.save\n"
        "  hf:ClassName              a transformers vision model from its default config "
        "(pip install 'splitwire[hf]')\n"
        "each may end with ?key=value&key2=value2 (builder / config options) and then, except "
        ".pt2, with @path/to/state_dict.pt (weights), e.g. zoo:resnet18?num_classes=10@ckpt.pt\n"
        "zoo models with packaged trained weights also take @pretrained "
        f"({', '.join(f'zoo:{n}@pretrained' for n in pretrained_names()) or 'none'}; "
        "pip install 'splitwire[pretrained]')"
    )
