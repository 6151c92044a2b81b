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
    "gate_miou",
    "add_nodelay_miou",
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
        if r["beyond_tau_max"]:  # every variant falls back to its local-only path
            assert r["fused_miou"] == r["local_miou"]
    # Nothing moves in the static regime: a stale answer only sees other sensor noise.
    static = [r["remote_miou"] for r in records if r["motion"] == "static"]
    assert max(static) - min(static) < 0.02, static


@pytest.mark.slow
def test_eval_with_a_speed_prints_a_table_and_plots(
    smoke: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "miou.png"
    argv = ["corrector", "eval", "--ckpt", str(smoke.directory), "--speed", "4,6"]
    assert main([*argv, "--max-delay", "2", "--clips", "2", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "4-6: 4-6 px/frame" in out
    assert re.search(r"^\s+delay\s+ms\s+local\s+remote\s+fused:add\s+gate\s+add-nodelay", out, re.M)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    assert main(["corrector", "eval", "--ckpt", str(tmp_path), "--speed", "3,1"]) == 2
    assert main(["corrector", "eval", "--ckpt", str(tmp_path)]) == 2  # no checkpoint there
    assert main(["corrector", "train", "--out", str(tmp_path), "--fusion", "film"]) == 2


def test_the_train_help_states_the_real_defaults() -> None:
    sub = next(
        a for a in build_parser()._actions if a.dest == "command"
    ).choices["corrector"]  # fmt: skip
    train = next(a for a in sub._actions if a.dest == "corrector_command").choices["train"]
    text = train.format_help()
    d = TrainConfig()
    assert f"{d.heavy_steps} heavy, {d.fusion_steps} fusion" in text
    assert f"(default {d.tau_max})" in text
    assert f"{d.min_heavy_miou} {d.min_fused_miou}" in text
    assert f"(default {d.extensions})" in text


@pytest.mark.slow
def test_latency_reports_both_ratios(smoke: TrainResult) -> None:
    result = measure_latency(load_corrector(smoke.directory), rounds=3, per_round=3)
    assert result.heavy_ms > 0 and result.local_ms > 0 and result.fused_ms > 0
    assert 0 < result.local_ratio < 10 and -1 < result.fusion_overhead < 10
    assert result.threads == 1
    # The smoke models are tiny but the fusion adds convolutions: MACs are exact counts.
    assert 0 < result.local_macs < result.fused_macs
    assert result.local_macs < result.heavy_macs
