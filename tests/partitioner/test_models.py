"""Reference models and model-spec resolution (splitwire.partitioner.models).

Run: .venv/bin/python -m pytest tests/partitioner/test_models.py -q   (add -m "not slow" to skip
the torch.export round trips)
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import splitwire.partitioner.models as models
from splitwire.partitioner.errors import ModelSpecError
from splitwire.partitioner.models import (
    LoadedModel,
    load_model,
    parse_spec,
    weights_hash,
    zoo_entry,
    zoo_names,
)

ZOO = [
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "mobilenet_v2",
    "resnet18",
    "resnet50",
    "texture_unet",
    "unet_small",
    "vit_tiny",
]

# Small configurations of transformers vision models: a few layers each, 10 classes.
HF_SPECS = {
    "resnet": "hf:ResNetForImageClassification?embedding_size=16"
    "&hidden_sizes=[16,32,64,128]&depths=[1,1,1,1]&num_labels=10",
    "mobilenet_v2": "hf:MobileNetV2ForImageClassification?depth_multiplier=0.35"
    "&image_size=64&num_labels=10",
    "vit": "hf:ViTForImageClassification?image_size=32&patch_size=8&hidden_size=32"
    "&num_hidden_layers=2&num_attention_heads=2&intermediate_size=64&num_labels=10",
}


def _inputs(shape: tuple[int, ...], *, seed: int = 1) -> torch.Tensor:
    # A private generator: test inputs must not depend on (or disturb) the global RNG.
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _with_batch(shape: tuple[int, ...] | None, batch: int) -> tuple[int, ...]:
    assert shape is not None
    return (batch, *shape[1:])


def _perturb(module: nn.Module, *, seed: int = 7) -> None:
    """Move every floating-point parameter and buffer away from its seeded initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.add_(0.01 * torch.randn(t.shape, generator=g))


@pytest.fixture(scope="module", params=ZOO)
def zoo_model(request: pytest.FixtureRequest) -> LoadedModel:
    """Every zoo model at its default options, built once per module."""
    return load_model(f"zoo:{request.param}")


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers present, and barred from the network for this test.

    huggingface_hub reads HF_HUB_OFFLINE once, when first imported, so the variables are set
    before the import; building from a config needs no network in the first place.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # The test install includes the `hf` extra: a missing transformers fails, never skips.
    import transformers  # noqa: F401


# --- the public surface -------------------------------------------------------------------------


def test_public_names_are_sorted_and_exist() -> None:
    assert models.__all__ == sorted(models.__all__)
    for name in models.__all__:
        assert hasattr(models, name), name


def test_zoo_names_are_the_registered_models() -> None:
    assert zoo_names() == ZOO
    for name in ZOO:
        entry = zoo_entry(name)
        assert entry.name == name
        assert entry.input_shape[0] == 1


def test_unknown_zoo_entry_lists_the_names() -> None:
    with pytest.raises(ModelSpecError) as info:
        zoo_entry("resnet19")
    assert "'resnet19'" in str(info.value)
    for name in ZOO:
        assert name in str(info.value)


# --- every zoo model: forward, hash --------------------------------------------------------------


def test_zoo_model_forward_at_default_shape(zoo_model: LoadedModel) -> None:
    name = zoo_model.spec.removeprefix("zoo:")
    entry = zoo_entry(name)
    assert zoo_model.input_shape == entry.input_shape
    assert zoo_model.task == entry.task
    assert not zoo_model.module.training
    x = _inputs(_with_batch(zoo_model.input_shape, 2))
    with torch.no_grad():
        y = zoo_model.module(x)
    if entry.task == "classification":
        assert y.shape == (2, 1000)
    elif name == "texture_unet":  # the delay corrector's heavy model: logits and its downlink
        logits, downlink = y
        assert logits.shape == (2, 5, *x.shape[-2:])
        assert downlink.shape == (2, 8, x.shape[-2] // 4, x.shape[-1] // 4)
    else:
        assert y.shape == (2, 21, *x.shape[-2:])
    assert all(torch.isfinite(t).all() for t in (y if isinstance(y, tuple) else (y,)))


def test_same_spec_same_weights_and_a_changed_weight_changes_them(zoo_model: LoadedModel) -> None:
    again = load_model(zoo_model.spec)
    assert weights_hash(again.module) == weights_hash(zoo_model.module)
    before = weights_hash(again.module)
    first_param = next(again.module.parameters())
    with torch.no_grad():
        first_param.view(-1)[0] += 1e-3
    assert weights_hash(again.module) != before


def test_a_changed_buffer_changes_the_weights_hash() -> None:
    module = load_model("zoo:resnet18?num_classes=10").module
    before = weights_hash(module)
    with torch.no_grad():
        module.bn1.running_mean[0] += 1.0  # type: ignore[index, operator]
    assert weights_hash(module) != before


def test_weights_hash_covers_dtypes_without_numpy_equivalents() -> None:
    layer = nn.Linear(4, 3)
    as_bf16 = weights_hash(layer.to(torch.bfloat16))
    assert len(as_bf16) == 64
    assert as_bf16 != weights_hash(layer.to(torch.float16))


def test_loading_leaves_the_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    load_model("zoo:mobilenet_v2?width_mult=0.35")
    assert torch.equal(torch.get_rng_state(), state)


def test_options_reach_the_builder_and_the_input_shape() -> None:
    loaded = load_model("zoo:vit_tiny?image_size=64&num_classes=10&depth=2")
    assert loaded.input_shape == (1, 3, 64, 64)
    assert loaded.module(_inputs((2, 3, 64, 64))).shape == (2, 10)


# --- torch.export with a dynamic batch ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ("zoo:resnet18", (3, 64, 64)),
        ("zoo:resnet50", (3, 64, 64)),
        ("zoo:mobilenet_v2", (3, 64, 64)),
        ("zoo:efficientnet_lite0?image_size=64", (3, 64, 64)),
        ("zoo:vit_tiny?image_size=64", (3, 64, 64)),
        ("zoo:unet_small", (3, 64, 64)),
    ],
)
def test_zoo_model_exports_with_dynamic_batch(spec: str, shape: tuple[int, ...]) -> None:
    model = load_model(spec).module
    batch = torch.export.Dim("batch")
    # The example batch must be >= 2: torch.export specialises sizes 0 and 1.
    program = torch.export.export(model, (_inputs((2, *shape)),), dynamic_shapes=({0: batch},))
    exported = program.module()
    for n in (1, 3):
        x = _inputs((n, *shape), seed=n)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), model(x))


# --- @weights ------------------------------------------------------------------------------------


@pytest.mark.parametrize("nesting", [None, "state_dict", "model"])
def test_state_dict_round_trip(tmp_path: Path, nesting: str | None) -> None:
    spec = "zoo:mobilenet_v2?width_mult=0.35&num_classes=10"
    trained = load_model(spec).module
    _perturb(trained)  # otherwise the seeded init alone would reproduce the outputs
    path = tmp_path / "ckpt.pt"
    state = trained.state_dict()
    torch.save(state if nesting is None else {nesting: state, "epoch": 3}, path)

    loaded = load_model(f"{spec}@{path}")

    assert weights_hash(loaded.module) == weights_hash(trained)
    assert weights_hash(loaded.module) != weights_hash(load_model(spec).module)
    x = _inputs((2, 3, 64, 64))
    with torch.no_grad():
        assert torch.equal(loaded.module(x), trained(x))


def test_checkpoint_with_a_missing_key_is_refused(tmp_path: Path) -> None:
    state = load_model("zoo:resnet18?num_classes=10").module.state_dict()
    del state["layer2.0.bn1.running_var"]
    torch.save(state, tmp_path / "ckpt.pt")
    with pytest.raises(ModelSpecError, match=r"missing keys \[layer2\.0\.bn1\.running_var\]"):
        load_model(f"zoo:resnet18?num_classes=10@{tmp_path / 'ckpt.pt'}")


def test_checkpoint_with_a_wrong_shape_is_refused(tmp_path: Path) -> None:
    torch.save(load_model("zoo:resnet18?num_classes=10").module.state_dict(), tmp_path / "c.pt")
    with pytest.raises(ModelSpecError) as info:
        load_model(f"zoo:resnet18@{tmp_path / 'c.pt'}")  # 1000 classes, checkpoint has 10
    message = str(info.value)
    assert "fc.weight: checkpoint (10, 512) vs model (1000, 512)" in message
    assert "fc.bias" in message
    assert "num_classes" in message  # the hint on what to check


def test_checkpoint_with_unexpected_prefixed_keys_explains_the_prefix(tmp_path: Path) -> None:
    state = load_model("zoo:resnet18?num_classes=10").module.state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "c.pt")
    with pytest.raises(ModelSpecError, match=r"extra 'module\.' prefix"):
        load_model(f"zoo:resnet18?num_classes=10@{tmp_path / 'c.pt'}")


class NotATensor:
    """Any class: pickling an instance makes a checkpoint that weights_only must refuse."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": NotATensor()}, path)
    with pytest.raises(
        ModelSpecError,
        match=r"refused to load .* it pickles tests\.partitioner\.test_models\.NotATensor",
    ) as info:
        load_model(f"zoo:resnet18@{path}")
    assert isinstance(info.value.__cause__, Exception)


def test_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(ModelSpecError, match="holds a list, not a state dict"):
        load_model(f"zoo:resnet18@{tmp_path / 'list.pt'}")


def test_missing_and_corrupt_weights_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_model(f"zoo:resnet18@{tmp_path / 'nope.pt'}")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelSpecError, match="cannot read weights file"):
        load_model(f"zoo:resnet18@{tmp_path / 'junk.pt'}")


# --- file.py:callable ---------------------------------------------------------------------------

MODEL_FILE = """
import torch
from torch import nn


def build(num_classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.5), nn.Linear(8, num_classes))


def not_a_model():
    return {"weights": 42}


NOT_CALLABLE = 3
"""


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent(MODEL_FILE))
    return path


def test_file_spec_builds_the_callable_in_eval_mode(model_file: Path) -> None:
    loaded = load_model(f"{model_file}:build")
    assert loaded.input_shape is None and loaded.task is None
    assert not loaded.module.training  # dropout off: two runs agree
    x = _inputs((2, 3, 16, 16))
    assert loaded.module(x).shape == (2, 4)
    assert torch.equal(loaded.module(x), loaded.module(x))
    # Seeded like the zoo: the same spec gives the same weights.
    assert weights_hash(load_model(f"{model_file}:build").module) == weights_hash(loaded.module)


def test_file_spec_options_are_keyword_arguments(model_file: Path) -> None:
    assert load_model(f"{model_file}:build?num_classes=7").module(_inputs((1, 3, 8, 8))).shape == (
        1,
        7,
    )
    with pytest.raises(ModelSpecError, match=r"option\(s\) classes .* accepted: num_classes"):
        load_model(f"{model_file}:build?classes=7")


def test_file_spec_callable_returning_a_non_module_is_refused(model_file: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"returned builtins\.dict .*expected a torch\.nn"):
        load_model(f"{model_file}:not_a_model")


def test_file_spec_with_a_missing_callable_lists_the_available_ones(model_file: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"'buld' is not defined .* build, not_a_model"):
        load_model(f"{model_file}:buld")
    with pytest.raises(ModelSpecError, match="'NOT_CALLABLE' is not callable"):
        load_model(f"{model_file}:NOT_CALLABLE")


def test_file_spec_that_fails_to_import_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("import torch\nraise RuntimeError('boom')\n")
    with pytest.raises(ModelSpecError, match=r"importing .* failed \(RuntimeError: boom\)"):
        load_model(f"{path}:build")


# --- .pt2 ---------------------------------------------------------------------------------------


def test_pt2_spec_loads_the_exported_program(tmp_path: Path) -> None:
    # Small on purpose (exporting and loading cost ~1 s per ten layers); BatchNorm in eval mode
    # checks that the archive keeps the mode it was exported in.
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    _perturb(model)
    model.eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (_inputs((2, 3, 32, 32)),), dynamic_shapes=({0: batch},))
    path = tmp_path / "small.pt2"
    torch.export.save(program, path)

    loaded = load_model(str(path))

    assert loaded.input_shape == (1, 3, 32, 32)
    for n in (1, 3):
        x = _inputs((n, 3, 32, 32), seed=n)
        with torch.no_grad():
            torch.testing.assert_close(loaded.module(x), model(x))


def test_pt2_spec_refuses_options_weights_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"takes no \?options and no @weights"):
        load_model(f"{tmp_path / 'm.pt2'}@{tmp_path / 'w.pt'}")
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(ModelSpecError, match=r"cannot load .* as a torch\.export archive"):
        load_model(str(tmp_path / "junk.pt2"))


# --- hf: ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", HF_SPECS.values(), ids=HF_SPECS.keys())
@pytest.mark.usefixtures("hf_offline")
def test_hf_spec_returns_a_plain_tensor(spec: str) -> None:
    loaded = load_model(spec)
    assert loaded.task == "classification"
    assert not loaded.module.training
    x = _inputs(_with_batch(loaded.input_shape or (1, 3, 64, 64), 2))
    with torch.no_grad():
        y = loaded.module(x)
    assert type(y) is torch.Tensor
    assert y.shape == (2, 10)


@pytest.mark.slow
@pytest.mark.usefixtures("hf_offline")
def test_hf_model_exports_with_dynamic_batch_and_is_deterministic() -> None:
    loaded = load_model(HF_SPECS["vit"])
    assert loaded.input_shape == (1, 3, 32, 32)
    assert weights_hash(load_model(HF_SPECS["vit"]).module) == weights_hash(loaded.module)
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        loaded.module, (_inputs((2, 3, 32, 32)),), dynamic_shapes=({0: batch},)
    )
    x = _inputs((3, 3, 32, 32), seed=3)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), loaded.module(x))


@pytest.mark.usefixtures("hf_offline")
def test_hf_weights_load_into_the_transformers_model(tmp_path: Path) -> None:
    trained = load_model(HF_SPECS["vit"]).module
    _perturb(trained)
    torch.save(trained.model.state_dict(), tmp_path / "vit.pt")  # transformers' own key names
    loaded = load_model(f"{HF_SPECS['vit']}@{tmp_path / 'vit.pt'}")
    assert weights_hash(loaded.module) == weights_hash(trained)


@pytest.mark.usefixtures("hf_offline")
def test_hf_errors_name_the_class_and_the_option() -> None:
    with pytest.raises(ModelSpecError, match="did you mean ViTForImageClassification") as info:
        load_model("hf:VitForImageClassification")
    assert "zoo:NAME" in str(info.value)
    with pytest.raises(ModelSpecError, match=r"unknown option\(s\) hidden_dim .*hidden_size"):
        load_model("hf:ViTForImageClassification?hidden_dim=32")
    with pytest.raises(ModelSpecError, match="does not take pixel_values"):
        load_model("hf:BertModel")


def test_hf_without_transformers_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ModelSpecError, match=r"pip install 'splitwire\[hf\]'"):
        load_model("hf:ViTForImageClassification")


# --- spec errors --------------------------------------------------------------------------------


def _assert_lists_forms(message: str) -> None:
    for name in ZOO:
        assert name in message
    for form in ("zoo:NAME", "path/to/file.py:callable", "path/to/model.pt2", "hf:ClassName"):
        assert form in message


def test_unknown_zoo_name() -> None:
    with pytest.raises(ModelSpecError) as info:
        load_model("zoo:resnet34")
    assert "unknown zoo model 'resnet34'" in str(info.value)
    _assert_lists_forms(str(info.value))


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("s3:bucket/model", "unknown scheme 's3:'"),
        ("resnet18", "did you mean 'zoo:resnet18'"),
        ("weights.pt", "a state dict needs a model"),
        ("net.py", "'net.py:build'"),
    ],
)
def test_unrecognised_spec(spec: str, hint: str) -> None:
    with pytest.raises(ModelSpecError) as info:
        load_model(spec)
    assert f"unrecognised model spec {spec!r}" in str(info.value)
    assert hint in str(info.value)
    _assert_lists_forms(str(info.value))


@pytest.mark.parametrize("suffix", ["model.py:build", "model.pt2"])
def test_missing_model_file(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ModelSpecError) as info:
        load_model(str(tmp_path / suffix))
    assert "does not exist" in str(info.value)
    assert str(tmp_path / suffix.split(":")[0]) in str(info.value)
    _assert_lists_forms(str(info.value))


def test_unknown_option_lists_the_accepted_ones() -> None:
    with pytest.raises(ModelSpecError) as info:
        load_model("zoo:mobilenet_v2?width=0.5")
    message = str(info.value)
    assert "unknown option(s) width" in message
    assert "accepted: dropout, in_channels, num_classes, width_mult" in message


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("zoo:resnet18?", "nothing after '\\?'"),
        ("zoo:resnet18?num_classes", "not key=value"),
        ("zoo:resnet18?num_classes=1&num_classes=2", "given twice"),
        ("zoo:resnet18?num_classes=[1", "not a valid YAML value"),
        ("zoo:resnet18@", "nothing after '@'"),
        ("zoo:vit_tiny?image_size=100", "image_size must be a multiple of patch_size"),
    ],
)
def test_malformed_specs(spec: str, match: str) -> None:
    with pytest.raises(ModelSpecError, match=match):
        load_model(spec)


def test_parse_spec_splits_options_and_weights() -> None:
    parsed = parse_spec("zoo:vit_tiny?image_size=64&name=tiny&ratio=0.5@runs/a@b.pt")
    assert (parsed.kind, parsed.target, parsed.weights) == ("zoo", "vit_tiny", "runs/a@b.pt")
    assert dict(parsed.options) == {"image_size": 64, "name": "tiny", "ratio": 0.5}
    parsed = parse_spec("zoo:resnet18@ckpt?v2.pt")
    assert (dict(parsed.options), parsed.weights) == ({}, "ckpt?v2.pt")
    parsed = parse_spec("models/net.py:build@w.pt")
    assert (parsed.kind, parsed.target, parsed.attr, parsed.weights) == (
        "file",
        "models/net.py",
        "build",
        "w.pt",
    )


@pytest.fixture(autouse=True)
def _no_leaked_user_modules() -> Iterator[None]:
    # file specs register their module in sys.modules; keep tests independent of each other.
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("splitwire_user_model_"):
            del sys.modules[name]
