"""The delay corrector: a light local model on the current frame, fused with features a heavy
remote model computed from an older frame, conditioned on the delay (Dedelayed).

    >>> from splitwire.corrector import load_corrector
    >>> corrector = load_corrector(Path("out/corrector"))
    >>> logits = corrector.fuse(corrector.local_features(frame), downlink, delay_frames=3)
    >>> out = corrector.answer(feats, thumbnail=..., delay_frames=3, remote_feats=downlink,
    ...                        remote_classes=classes, remote_thumbnail=...)   # what is emitted

Train and evaluate with ``splitwire corrector train|eval|latency`` (:mod:`.cli`). Torch only:
no gRPC, no MQTT.

Exceptions::

    SplitwireError
    +-- CorrectorError          root (exit code 2: bad input)
        +-- TaskConfigError     a task, training or evaluation setting out of range
        +-- CheckpointError     a checkpoint directory that is missing, malformed or does not fit
        +-- ConvergenceError    training below its held-out quality bar (exit code 3)
        +-- FeatureShapeError   remote features or frames that disagree with the checkpoint
"""

from splitwire.lazy import lazy_exports

# Names are imported on first use (PEP 562): `splitwire --help` must not pay for torch.
_LOCATIONS = {
    "Answer": "splitwire.corrector.runtime",
    "CheckpointError": "splitwire.corrector.errors",
    "Clip": "splitwire.corrector.video",
    "ConvergenceError": "splitwire.corrector.errors",
    "Corrector": "splitwire.corrector.runtime",
    "CorrectorError": "splitwire.corrector.errors",
    "EvalRecord": "splitwire.corrector.evaluation",
    "FeatureShapeError": "splitwire.corrector.errors",
    "Fusion": "splitwire.corrector.fusion",
    "LocalFeatures": "splitwire.corrector.local",
    "MotionGate": "splitwire.corrector.selection",
    "Regime": "splitwire.corrector.evaluation",
    "TaskConfig": "splitwire.corrector.video",
    "TaskConfigError": "splitwire.corrector.errors",
    "TrainConfig": "splitwire.corrector.training",
    "ablation": "splitwire.corrector.ablation",
    "calibrate_gate": "splitwire.corrector.selection",
    "clip": "splitwire.corrector.video",
    "evaluate": "splitwire.corrector.evaluation",
    "fusion_names": "splitwire.corrector.fusion",
    "load_checkpoint": "splitwire.corrector.checkpoint",
    "load_corrector": "splitwire.corrector.runtime",
    "make_fusion": "splitwire.corrector.fusion",
    "measure_latency": "splitwire.corrector.latency",
    "preprocess": "splitwire.corrector.inputs",
    "scene": "splitwire.corrector.video",
    "train": "splitwire.corrector.training",
}
__all__ = sorted(_LOCATIONS)

__getattr__, __dir__ = lazy_exports(__name__, _LOCATIONS, globals())
