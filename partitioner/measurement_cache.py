"""Reuse measurements across plans: bytes and accuracy do not depend on the link or the devices.

    splitwire plan ... --out plans/a          # measures; writes plans/a/measurements.json
    splitwire plan ... --reuse-measurements plans/a --out plans/b   # no tail runs

Measuring every (cut, codec) runs the real tail on decoded activations, which is the slow part of
planning. What it yields — bytes on the wire, result bytes, every task metric, the camera-frame
baselines' own encode/decode times on the planning machine — is stored next to the plan and
keyed by what it depends on: the model's hash, the input shape, the calibration count and data,
the camera-frame baselines' codecs (the JPEG grid: qualities × 4:2:0/4:4:4), the splitwire and
torch versions, every cut's crossing tensors, and the model's task (which metrics were measured:
``kl``/``top1``/``top5`` for a classifier, ``pixel``/``miou`` for segmentation, ``rel`` always).
A reused measurement is priced again with the current profiles
(:func:`splitwire.partitioner.measure.reprice`), for any budget in the task's metrics.

A candidate that pruning left unmeasured (``dominated_by``) has no metrics; it is read back as
not measured, and measured now if it may reach a front on the new links
(:func:`splitwire.partitioner.pruning.recheck_skipped`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from splitwire.partitioner.accuracy import AccuracyBudget, Evidence, TaskMetrics
from splitwire.partitioner.cost import Measurement
from splitwire.partitioner.cuts import Cut
from splitwire.partitioner.errors import PlanError
from splitwire.partitioner.measure import is_camera_baseline, not_measured, unpriced

CACHE_FILE = "measurements.json"
# 2: task metrics instead of one accuracy cost and top-1 agreement. 3: camera-frame baselines
# (uint8 frames, a JPEG grid) with per-codec times, instead of one JPEG of the float input.
# 4: every cut's activations as its head sends them (schema 3 measured a value that a later
# in-place op changes, such as a batch norm's output before its ReLU, after the change).
CACHE_SCHEMA = 4


@dataclass(frozen=True)
class CacheKey:
    """What measurements depend on; a cache is reused only when every field matches."""

    model_hash: str
    input_shape: tuple[int, ...]
    calibration: int
    # The camera-frame baselines measured (``frame``, ``jpeg75s444``, ...; empty for inputs
    # that are no image): another JPEG grid is other measurements.
    camera_codecs: tuple[str, ...]
    # The code that measured (a codec or a metric may change between versions) and what each
    # cut sends (a change in cut enumeration must not reuse figures of other tensors).
    versions: str = ""
    crossings: str = ""
    calibration_data: str = ""
    # classification / segmentation / regression / None: which metrics the entries hold.
    task: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The key as JSON fields."""
        return {
            "model_hash": self.model_hash,
            "input_shape": list(self.input_shape),
            "calibration": self.calibration,
            "camera_codecs": list(self.camera_codecs),
            "versions": self.versions,
            "crossings": self.crossings,
            "calibration_data": self.calibration_data,
            "task": self.task,
        }


def crossings_digest(cuts: Sequence[Cut]) -> str:
    """A short hash of every cut's id and crossing tensors (node, shape, dtype)."""
    text = ";".join(
        f"{c.id}:" + ",".join(f"{t.node}{list(t.shape)}{t.dtype}" for t in c.crossing) for c in cuts
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CachedMeasurements:
    """Measurements read back (times not yet priced) and the camera-frame baselines' (encode,
    decode) ms measured with them, by codec."""

    measurements: tuple[Measurement, ...]
    camera_ms: dict[str, tuple[float, float]]


def save_measurements(
    directory: Path,
    key: CacheKey,
    measurements: Sequence[Measurement],
    *,
    edge_slowdown: float,
    cloud_slowdown: float,
) -> Path:
    """Write ``directory/measurements.json`` (the link- and device-independent fields)."""
    entries = []
    camera_ms = {}
    for m in measurements:
        entries.append(
            {
                "cut": m.cut,
                "codec": m.codec,
                "baseline": m.baseline,
                "bytes_wire": m.bytes_wire,
                "result_bytes": m.result_bytes,
                "metrics": asdict(m.metrics) if m.metrics is not None else None,
                # The inputs the metrics rest on and their 95 % intervals (None: exact).
                "evidence": m.evidence.as_json() if m.evidence is not None else None,
                "bytes_frames": m.bytes_frames,
                # Not measured: an exact candidate beat it on every link planned for.
                "dominated_by": m.dominated_by,
            }
        )
        if is_camera_baseline(m):  # undo the profiles' emulated slowdowns
            camera_ms[m.codec] = [m.encode_ms / edge_slowdown, m.decode_ms / cloud_slowdown]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CACHE_FILE
    document = {
        "schema": CACHE_SCHEMA,
        "key": key.as_json(),
        "camera_ms": camera_ms,
        "entries": entries,
    }
    path.write_text(json.dumps(document, indent=1))
    return path


def load_measurements(
    path: Path,
    key: CacheKey,
    cuts: Mapping[str, Cut],
    codecs: Sequence[str],
    *,
    budget: AccuracyBudget,
) -> CachedMeasurements:
    """Read measurements for ``key``, covering every cut and every codec asked for.

    Args:
        path: ``measurements.json`` or the plan directory holding it.
        cuts: this graph's cuts by id.
        codecs: the codecs this plan considers (the cache may hold more).
        budget: the metric accuracy costs are stated in (the cache keeps every metric).

    Raises:
        PlanError: no such file, another schema, a key field differs (named), or a cut/codec
            is missing.
    """
    file = path / CACHE_FILE if path.is_dir() else path
    try:
        document = json.loads(file.read_text())
    except OSError as exc:
        raise PlanError(f"cannot read measurements {file}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise PlanError(f"{file} is not valid JSON: {exc}") from exc
    if isinstance(document, dict) and document.get("schema") == 1:
        raise PlanError(
            f"{file} was measured before task metrics (schema 1: one accuracy figure); "
            "measure again (drop --reuse-measurements)"
        )
    if isinstance(document, dict) and document.get("schema") == 2:
        raise PlanError(
            f"{file} was measured before the camera-frame baselines (schema 2: one JPEG of "
            "the float input); measure again (drop --reuse-measurements)"
        )
    if isinstance(document, dict) and document.get("schema") == 3:
        raise PlanError(
            f"{file} was measured with a batch norm's output recorded after its in-place ReLU "
            "(schema 3: wrong bytes and accuracy at such cuts); measure again (drop "
            "--reuse-measurements)"
        )
    if not isinstance(document, dict) or document.get("schema") != CACHE_SCHEMA:
        raise PlanError(f"{file}: not a schema-{CACHE_SCHEMA} measurements file")
    stored = document.get("key")
    if not isinstance(stored, dict) or not isinstance(document.get("entries"), list):
        raise PlanError(f"{file}: expected a 'key' mapping and an 'entries' list")
    for field, value in key.as_json().items():
        if stored.get(field) != value:
            raise PlanError(
                f"{file} was measured for {field} = {stored.get(field)!r}, this plan has "
                f"{value!r}; measure again (drop --reuse-measurements)"
            )
    wanted = set(codecs)
    out: list[Measurement] = []
    seen: set[tuple[str, str]] = set()
    for entry in document["entries"]:
        try:
            cut = cuts[entry["cut"]]
            if entry["codec"] not in wanted and entry["baseline"] is None:
                continue
            out.append(_measurement(entry, cut, budget, task=key.task))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{file}: malformed entry {entry!r} ({exc})") from exc
        seen.add((entry["cut"], entry["codec"]))
    missing = [
        f"{cut_id}/{codec}"
        for cut_id, cut in cuts.items()
        for codec in (("none",) if not cut.crossing and cut.index > 0 else wanted)
        if (cut_id, codec) not in seen
    ]
    if missing:
        raise PlanError(
            f"{file} lacks {len(missing)} (cut, codec) measurements, e.g. {missing[:3]}; "
            "measure again with these codecs"
        )
    try:
        camera_ms = {
            str(codec): (float(times[0]), float(times[1]))
            for codec, times in document.get("camera_ms", {}).items()
        }
    except (AttributeError, TypeError, ValueError, IndexError) as exc:
        raise PlanError(f"{file}: malformed camera_ms {document.get('camera_ms')!r}") from exc
    return CachedMeasurements(tuple(out), camera_ms)


def _measurement(
    entry: Mapping[str, Any], cut: Cut, budget: AccuracyBudget, *, task: str | None
) -> Measurement:
    if entry.get("dominated_by"):  # its tail never ran; pruning.recheck_skipped checks it again
        # Placeholder metrics in the task's terms (the budget is one of them), dropped at once
        # by not_measured: the candidate's accuracy is unknown.
        return not_measured(
            unpriced(
                cut,
                codec=str(entry["codec"]),
                baseline=entry["baseline"],
                bytes_wire=float(entry["bytes_wire"]),
                result_bytes=int(entry["result_bytes"]),
                metrics=TaskMetrics.exact(task),
                budget=budget,
            ),
            dominated_by=str(entry["dominated_by"]),
        )
    values = {k: None if v is None else float(v) for k, v in entry["metrics"].items()}
    rel = values.pop("rel")
    if rel is None:
        raise ValueError("metrics without 'rel'")
    metrics = TaskMetrics(rel=rel, **values)
    evidence = entry.get("evidence")
    return unpriced(
        cut,
        codec=str(entry["codec"]),
        baseline=entry["baseline"],
        bytes_wire=float(entry["bytes_wire"]),
        result_bytes=int(entry["result_bytes"]),
        metrics=metrics,
        budget=budget,
        evidence=Evidence.from_json(evidence) if evidence is not None else None,
        bytes_frames=int(entry.get("bytes_frames", 0)),
    )
