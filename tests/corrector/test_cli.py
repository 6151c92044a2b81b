"""``splitwire corrector`` on a smoke checkpoint: eval --json prints the records, the table and
the plot are written, bad flags exit 2; the latency measurement reports both targets' ratios."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from splitwire.cli import build_parser, main
from splitwire.corrector.latency import measure_latency
from splitwire.corrector.runtime import load_corrector
from splitwire.corrector.training import TrainConfig, TrainResult

FIELDS = {
    "motion",
    "speed_lo",
    "speed_hi",
    "delay_frames",
    "delay_ms",
    "beyond_tau_max",
    "local_miou",
    "remote_miou",
    "fused_miou",
    "heavy_miou",
    "fusion_miou",
    "fused_margin",
    "kept_share",
    "feature_bytes",
    "class_map_bytes",
    "downlink_bytes",
    "gate_miou",
    "add_nodelay_miou",
    "gate_fusion_miou",
    "add_nodelay_fusion_miou",
}


@pytest.mark.slow
def test_eval_json_prints_every_regime_and_delay(
    smoke: TrainResult, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["corrector", "eval", "--ckpt", str(smoke.directory), "--json"]
    assert main([*argv, "--max-delay", "5", "--clips", "3"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["motion"], r["delay_frames"]) for r in records] == [
        (m, d) for m in ("static", "low", "high") for d in range(6)
    ]
    for r in records:
        assert r.keys() >= FIELDS, r
        assert r["beyond_tau_max"] == (r["delay_frames"] > 3)
        assert all(0.0 <= r[k] <= 1.0 for k in FIELDS if k.endswith("_miou"))
        if r["beyond_tau_max"]:  # every variant's fusion falls back to its local-only path
            assert r["fusion_miou"] == r["local_miou"]
        assert r["fused_margin"] == round(
            r["fused_miou"] - max(r["local_miou"], r["remote_miou"]), 4
        )
        # The result messages: both payloads and their two headers.
        payloads = r["feature_bytes"] + r["class_map_bytes"]
        assert payloads < r["downlink_bytes"] < payloads + 200
        assert 0 < r["class_map_bytes"] < 4096 and r["feature_bytes"] > 0
    # Nothing moves in the static regime: a stale answer only sees other sensor noise, and
    # the remote class map is shown everywhere, at every delay (beyond tau_max too).
    static = [r for r in records if r["motion"] == "static"]
    remote = [r["remote_miou"] for r in static]
    assert max(remote) - min(remote) < 0.02, remote
    assert all(r["kept_share"] == 1.0 and r["fused_miou"] == r["remote_miou"] for r in static)
    assert all(r["heavy_miou"] == static[0]["remote_miou"] for r in static)


@pytest.mark.slow
def test_eval_with_a_speed_prints_a_table_and_plots(
    smoke: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "miou.png"
    argv = ["corrector", "eval", "--ckpt", str(smoke.directory), "--speed", "4,6"]
    assert main([*argv, "--max-delay", "2", "--clips", "2", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "4-6: 4-6 px/frame" in out
    assert re.search(
        r"^\s+delay\s+ms\s+local\s+remote\s+fused:add\s+fusion\s+gate\s+gate:fusion\s+"
        r"add-nodelay\s+add-nodelay:fusion\s+kept%\s+fused-best",
        out,
        re.M,
    )
    assert "heavy model at delay 0" in out and "B/frame" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_ablation_reports_every_delay_per_seed(
    smoke: TrainResult, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["corrector", "ablation", "--ckpt", str(smoke.directory), "--clips", "2", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["delay_frames"] for r in rows] == [0, 1, 2, 3]  # 0..tau_max
    for r in rows:
        assert len(r["fusion_diff"]) == 1 and r["fusion_std"] == 0.0
        assert r["fusion_mean"] == r["fusion_diff"][0]
    assert main(["corrector", "ablation", "--ckpt", str(smoke.directory), "--clips", "2"]) == 0
    assert "1 training seeds, 0-4 px/frame" in capsys.readouterr().out


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    assert main(["corrector", "eval", "--ckpt", str(tmp_path), "--speed", "3,1"]) == 2
    assert main(["corrector", "eval", "--ckpt", str(tmp_path)]) == 2  # no checkpoint there
    assert main(["corrector", "train", "--out", str(tmp_path), "--fusion", "film"]) == 2
    assert main(["corrector", "train", "--out", str(tmp_path), "--speed", "3,1"]) == 2
    assert main(["corrector", "ablation", "--ckpt", str(tmp_path), "--speed", "x"]) == 2


def test_the_train_help_states_the_real_defaults() -> None:
    sub = next(
        a for a in build_parser()._actions if a.dest == "command"
    ).choices["corrector"]  # fmt: skip
    train = next(a for a in sub._actions if a.dest == "corrector_command").choices["train"]
    text = " ".join(train.format_help().split())  # as a reader sees it, unwrapped
    d = TrainConfig()
    assert f"{d.heavy_steps} heavy, {d.fusion_steps} fusion" in text
    assert f"(default {d.tau_max})" in text
    assert f"{d.min_heavy_miou} {d.min_fused_miou}" in text
    assert f"(default {d.extensions})" in text
    assert f"(default {d.speed[0]:g},{d.speed[1]:g})" in text


@pytest.mark.slow
def test_latency_reports_both_ratios(smoke: TrainResult) -> None:
    result = measure_latency(load_corrector(smoke.directory), rounds=3, per_round=3)
    assert result.heavy_ms > 0 and result.local_ms > 0 and result.fused_ms > 0
    assert 0 < result.local_ratio < 10 and -1 < result.fusion_overhead < 10
    assert result.threads == 1
    # The smoke models are tiny but the fusion adds convolutions: MACs are exact counts.
    assert 0 < result.local_macs < result.fused_macs
    assert result.local_macs < result.heavy_macs
