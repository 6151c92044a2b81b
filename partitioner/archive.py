"""The one way splitwire loads a ``.pt2`` half: nothing in it is unpickled or run as code.

``torch.export.load`` trusts its archive. In torch 2.13 these entries run code of the archive's
choosing (``tests/partitioner/test_plan_trust.py`` crafts each and shows torch running it):

==========================================  =================================================
entry (under the archive's root folder)     what ``torch.export.load`` does with it
==========================================  =================================================
``data/weights/<w>`` marked ``use_pickle``  ``torch.load(weights_only=False)``: any pickle
``data/constants/tensor_*`` ``use_pickle``  the same
``data/constants/custom_obj_*``             ``torch._C._pickle_load_obj`` (TorchScript pickle)
``data/constants/opaque_obj_*``             ``pickle.loads``
``data/weights/model.pt``, ``constants/``   legacy ``torch.save`` blobs, unpickled by the
``model.pt``; a zip of the pre-2.8 format   deserialiser (weights_only first, then *without*)
``data/sample_inputs/model.pt``             ``torch.load(weights_only=True)``; when that fails,
                                            again with ``weights_only=False``: any pickle
``expr_str`` in ``models/model.json``       ``sympy.sympify``, which ``eval``\\ s the string
``guards_code`` in ``models/model.json``    Python source that ``ExportedProgram.module()`` execs
a node ``target`` in ``models/model.json``  any attribute reachable from ``torch``, ``math`` or
                                            ``operator`` (``torch.os.system`` resolves)
``data/aotinductor/...``                    compiled shared libraries, loaded and run
==========================================  =================================================

So :func:`load_program` reads the archive's bytes once, checks their sha256 against the plan,
and checks every entry against what splitwire's own exports contain (:data:`ALLOWED` below; the
halves of every zoo model at several cuts hold nothing else): raw tensor records listed in the
weights and constants configs with ``use_pickle: false``, the two configs and ``model.json``
(parsed under size bounds), and five small metadata files. In ``model.json`` every node target
must be an ATen operator (or one of a few pure ``operator``/``math``/``torch.sym_*``
functions), every ``expr_str`` a sympy expression of size symbols, integers and arithmetic, and
every guard a comparison of input sizes. Anything else is refused with an :class:`ArchiveError`
naming the archive and the entry. torch then loads a copy rebuilt from the checked entries only,
with the sample inputs emptied (they only serve re-tracing, and torch may unpickle them), so
what torch reads is exactly what was checked: nothing is unpickled, even by ``weights_only``.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splitwire.partitioner.errors import ArchiveError, PlanError
from splitwire.protocol.peer_text import peer_text

# Bounds on what is parsed before torch sees it. model.json of a ResNet-50 tail is ~0.4 MB and
# grows with the graph, not the weights: 64 MiB leaves room for graphs 100x larger.
MAX_PROGRAM_JSON_BYTES = 64 << 20
# The weights config has one ~300-byte line per tensor: 16 MiB is 50 000 tensors.
MAX_CONFIG_JSON_BYTES = 16 << 20
# Every tensor is an entry; a ResNet-50 half has ~320, a large transformer a few thousand.
MAX_ARCHIVE_ENTRIES = 65_536
# archive_format, archive_version, byteorder and the two .data files hold a few bytes each.
MAX_METADATA_BYTES = 64
# A size expression or a guard of our exports is under 100 characters.
MAX_EXPR_CHARS = 4096

WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
PROGRAM = "models/model.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
METADATA = {
    "archive_format": b"pt2",
    "archive_version": b"0",
    "byteorder": None,
    ".data/version": None,
    ".data/serialization_id": None,
}
ALLOWED = (
    *METADATA,
    PROGRAM,
    WEIGHTS_CONFIG,
    CONSTANTS_CONFIG,
    SAMPLE_INPUTS + " (loaded empty)",
    "data/weights/weight_N (raw, listed in the weights config)",
    "data/constants/tensor_* (raw, listed in the constants config)",
)
_WEIGHT_RECORD = re.compile(r"weight_[0-9]{1,9}")
_CONSTANT_RECORD = re.compile(r"tensor_[A-Za-z0-9_]{1,128}")
_ENTRY_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}")

# Why an entry of a kind torch knows is refused (the first matching prefix names it).
_REFUSED_KINDS = (
    ("data/weights/model.pt", "a legacy torch.save blob of weights: torch would unpickle it"),
    ("data/constants/model.pt", "a legacy torch.save blob of constants: torch would unpickle it"),
    ("data/constants/custom_obj_", "a pickled TorchScript object: torch would unpickle it"),
    ("data/constants/opaque_obj_", "a pickled Python object: torch would pickle.loads it"),
    ("data/aotinductor/", "AOTInductor compiled code: torch would load and run it"),
    ("data/executorch/", "ExecuTorch code: not part of a half splitwire exports"),
    ("data/mtia", "MTIA code: not part of a half splitwire exports"),
    ("xl_model_weights/", "external weights: not part of a half splitwire exports"),
    ("extra/", "an extra file: not part of a half splitwire exports"),
    ("models/", "a second program: a half holds one, models/model.json"),
)

# Node targets that are not ATen operators but pure functions of numbers (sizes).
_PURE_TARGETS = frozenset(
    {f"_operator.{name}" for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv")}
    | {f"_operator.{name}" for name in ("mod", "neg", "eq", "ne", "lt", "le", "gt", "ge")}
    | {f"torch.sym_{name}" for name in ("int", "float", "max", "min", "not", "ite", "sqrt")}
    | {f"math.{name}" for name in ("ceil", "floor", "trunc", "sqrt")}
)
_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z0-9_]{1,128})\.([A-Za-z0-9_]{1,128})")
# ATen operators that touch the file system or the process's output, not just tensors.
_REFUSED_ATEN = frozenset({"from_file", "_print"})

# sympy's srepr of size expressions (torch writes ``Symbol('s77', positive=True,
# integer=True)``), and torch's integer functions. No Pow or shifts: Pow(9, 10**9) is a
# denial of service, and nothing of a batch dimension needs one.
_SYMPY_CALLS = frozenset(
    {"Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Max", "Min", "Mod", "Abs"}
    | {"Equality", "Unequality", "StrictLessThan", "LessThan", "StrictGreaterThan"}
    | {"GreaterThan", "And", "Or", "Not", "FloorDiv", "ModularIndexing", "Where", "PythonMod"}
    | {"CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "RShift", "FloatTrueDiv"}
    | {"IntTrueDiv", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat"}
    | {"Identity"}
)
_SYMPY_NAMES = frozenset({"true", "false", "oo", "True", "False"})
_SYMPY_KEYWORDS = frozenset(
    {"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite"}
    | {"precision"}
)
_SYMBOL = re.compile(r"[a-z]{1,8}[0-9]{1,9}")  # torch's size symbols: s0, s77, u3, zuf0
_NUMBER = re.compile(r"[0-9][0-9.eE+-]{0,63}")
_EXPR_CHARS = re.compile(r"[A-Za-z0-9_(),'=+\-*/%. ]*")
_EXPR_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div,
    ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd,
)  # fmt: skip

# Guards compare input sizes: ``L['relu__8'].size()[0] == L['conv2d_10'].size()[0]``. No quotes
# but around names, no backslash, no '#': torch pastes the text into generated source.
_GUARD_CHARS = re.compile(r"[A-Za-z0-9_\[\]'().=<>!+\-*/% ]*")
_GUARD_METHODS = frozenset({"size", "stride", "dim", "numel", "storage_offset"})
_GUARD_NODES = (
    ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Load, ast.And, ast.Or,
    ast.Not, ast.USub, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Eq, ast.NotEq,
    ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)  # fmt: skip
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def load_program(path: Path, *, sha256: str | None) -> nn.Module:
    """Load the ``.pt2`` half at ``path`` as a runnable module, never running its code.

    Args:
        path: the archive.
        sha256: the hex digest its bytes must have (plan.yaml's record), or None for a half
            this process has just exported itself.

    Raises:
        ArchiveError: an entry that could run code or is not part of a half splitwire exports
            (the message names the archive and the entry).
        PlanError: the file cannot be read, its sha256 differs, or torch cannot load it.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlanError(f"cannot read {path}: {exc.strerror}") from exc
    # The bytes hashed are the bytes checked are the bytes loaded: no window for a swap.
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise PlanError(
            f"{path} does not match its recorded sha256; the plan directory was modified after "
            "planning: plan again"
        )
    checked = _checked_copy(data, archive=str(path))
    del data  # the copy is what torch reads; halve the peak for large halves
    try:
        return torch.export.load(io.BytesIO(checked)).module()
    except Exception as exc:  # torch raises many types; all mean "unusable archive"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise PlanError(f"cannot load {path}: {type(exc).__name__}: {reason}") from exc


class _Archive:
    """The entries of one archive, read through one ZipFile, with errors naming them."""

    def __init__(self, data: bytes, archive: str) -> None:
        self.archive = archive
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
            raise self.refuse(
                None, f"not a zip archive ({exc}); expected a torch.export .pt2"
            ) from exc
        if len(infos) > MAX_ARCHIVE_ENTRIES:
            raise self.refuse(
                None, f"{len(infos)} entries; at most {MAX_ARCHIVE_ENTRIES} are accepted"
            )
        self.root = ""
        self.entries: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            root, _, name = info.filename.partition("/")
            if not _ENTRY_NAME.fullmatch(info.filename) or ".." in info.filename or not name:
                raise self.refuse(
                    info.filename, "not a name torch.export writes (one root folder, no '..')"
                )
            if self.root and root != self.root:
                raise self.refuse(info.filename, f"outside the archive's root folder {self.root!r}")
            self.root = root
            if name in self.entries:
                raise self.refuse(info.filename, "appears twice; readers disagree on which wins")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise self.refuse(
                    info.filename,
                    "compressed or encrypted; torch.export stores entries as they are",
                )
            self.entries[name] = info

    def refuse(self, entry: str | None, why: str) -> ArchiveError:
        named = f", entry {peer_text(entry, 160)}" if entry is not None else ""
        return ArchiveError(
            f"refused to load {self.archive}{named}: {why}", archive=self.archive, entry=entry
        )

    def read(self, name: str, limit: int | None = None) -> bytes:
        info = self.entries[name]
        try:
            with self.zip.open(info) as f:
                data = f.read() if limit is None else f.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise self.refuse(self.full(name), f"cannot be read ({exc})") from exc
        if limit is not None and len(data) > limit:
            raise self.refuse(self.full(name), f"more than {limit} bytes; at most {limit}")
        return data

    def full(self, name: str) -> str:
        return f"{self.root}/{name}"


def _checked_copy(data: bytes, *, archive: str) -> bytes:
    """A new archive of the entries of ``data`` that pass the checks (module docstring), with
    empty sample inputs.

    Raises:
        ArchiveError: the first entry that does not pass, named.
    """
    zf = _Archive(data, archive)
    for name in zf.entries:
        _refuse_unknown_kind(zf, name)
    for name in (*(n for n in METADATA if METADATA[n] is not None), PROGRAM, WEIGHTS_CONFIG):
        if name not in zf.entries:
            raise zf.refuse(None, f"no {name}; expected a torch.export .pt2 of one program")
    kept: dict[str, bytes] = {}
    for name, value in METADATA.items():
        if name in zf.entries:
            kept[name] = zf.read(name, MAX_METADATA_BYTES)
            if value is not None and kept[name] != value:
                raise zf.refuse(
                    zf.full(name), f"holds {kept[name]!r}; expected {value!r} (torch 2.13's .pt2)"
                )
    program = zf.read(PROGRAM, MAX_PROGRAM_JSON_BYTES)
    _check_program(zf, _parse(zf, PROGRAM, program))
    kept[PROGRAM] = program
    records: set[str] = set()
    for config, folder, pattern in (
        (WEIGHTS_CONFIG, "data/weights/", _WEIGHT_RECORD),
        (CONSTANTS_CONFIG, "data/constants/", _CONSTANT_RECORD),
    ):
        if config not in zf.entries:
            continue
        text = zf.read(config, MAX_CONFIG_JSON_BYTES)
        records |= _check_config(zf, config, _parse(zf, config, text), folder, pattern)
        kept[config] = text
    for name in zf.entries:
        if name in kept or name == SAMPLE_INPUTS:
            continue
        if name not in records:
            raise zf.refuse(
                zf.full(name), "not listed in the weights or constants config of the archive"
            )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as dst:
        for name in zf.entries:
            payload = kept.get(name)
            if name == SAMPLE_INPUTS:
                payload = b""
            elif payload is None:
                payload = zf.read(name)
            dst.writestr(zipfile.ZipInfo(zf.full(name)), payload)
        if SAMPLE_INPUTS not in zf.entries:  # torch reads it unconditionally
            dst.writestr(zipfile.ZipInfo(zf.full(SAMPLE_INPUTS)), b"")
    return out.getvalue()


def _refuse_unknown_kind(zf: _Archive, name: str) -> None:
    folder, _, record = name.rpartition("/")
    if (
        name in METADATA
        or name in (PROGRAM, WEIGHTS_CONFIG, CONSTANTS_CONFIG, SAMPLE_INPUTS)
        or (folder == "data/weights" and _WEIGHT_RECORD.fullmatch(record))
        or (folder == "data/constants" and _CONSTANT_RECORD.fullmatch(record))
    ):
        return
    why = next((reason for prefix, reason in _REFUSED_KINDS if name.startswith(prefix)), None)
    raise zf.refuse(
        zf.full(name),
        why or f"not part of a half splitwire exports; a half holds only {', '.join(ALLOWED)}",
    )


def _parse(zf: _Archive, name: str, text: bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise zf.refuse(zf.full(name), f"not valid JSON ({str(exc)[:100]})") from exc


def _check_config(
    zf: _Archive, config: str, data: Any, folder: str, pattern: re.Pattern[str]
) -> set[str]:
    """The records a weights or constants config lists, each checked to be a raw tensor."""
    entries = data.get("config") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise zf.refuse(zf.full(config), 'expected {"config": {name: payload, ...}}')
    records = set()
    for fqn, meta in entries.items():
        what = f"{zf.full(config)} [{peer_text(str(fqn), 96)}]"
        if not isinstance(meta, dict):
            raise zf.refuse(what, "expected a mapping")
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not pattern.fullmatch(path_name):
            raise zf.refuse(what, f"path_name {peer_text(str(path_name))} is no raw tensor record")
        record = folder + path_name
        if meta.get("use_pickle") is not False:
            raise zf.refuse(
                zf.full(record),
                f"marked use_pickle ({peer_text(str(fqn), 96)}) in {config}: torch.export.load "
                "would unpickle it with weights_only=False, which runs any code it holds",
            )
        if record not in zf.entries:
            raise zf.refuse(zf.full(record), f"listed in {config} but missing")
        tensor_meta = meta.get("tensor_meta")
        sizes = tensor_meta.get("sizes") if isinstance(tensor_meta, dict) else None
        given = [s.get("as_int") if isinstance(s, dict) else None for s in sizes or []]
        if not isinstance(sizes, list) or not all(_is_size(d) for d in given):
            raise zf.refuse(what, "tensor_meta.sizes must be a list of non-negative integers")
        dims = [d for d in given if isinstance(d, int)]
        # torch fills an empty record with zeros of the declared size: a few bytes of archive
        # would allocate whatever the config claims.
        if zf.entries[record].file_size == 0 and math.prod(dims) != 0:
            raise zf.refuse(
                zf.full(record), f"empty, but declared of size {dims}; expected its bytes"
            )
        records.add(record)
    return records


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_program(zf: _Archive, program: Any) -> None:
    """Refuse anything in model.json that torch would evaluate as code (module docstring)."""
    where = zf.full(PROGRAM)
    if not isinstance(program, dict):
        raise zf.refuse(where, "expected a JSON object (a serialised ExportedProgram)")
    for key, value in _items(program):
        if key == "target" and isinstance(value, str):
            _check_target(zf, value)
        elif key == "expr_str":
            if not isinstance(value, str) or not _is_size_expr(value):
                raise zf.refuse(
                    where,
                    f"expr_str {peer_text(str(value), 96)} is not a size expression; torch would "
                    "eval it with sympy.sympify",
                )
        elif key == "guards_code":
            for guard in value if isinstance(value, list) else [value]:
                if not isinstance(guard, str) or not _is_size_guard(guard):
                    raise zf.refuse(
                        where,
                        f"guard {peer_text(str(guard), 96)} is not a comparison of input sizes; "
                        "torch would run it as Python",
                    )


def _items(tree: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of every mapping in a JSON tree, without recursion."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                yield key, value
                if isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))


def _check_target(zf: _Archive, target: str) -> None:
    if target in _PURE_TARGETS:
        return
    match = _ATEN_TARGET.fullmatch(target)
    if match is not None and match.group(1) not in _REFUSED_ATEN:
        packet = getattr(torch.ops.aten, match.group(1), None)
        if isinstance(packet, torch._ops.OpOverloadPacket):
            overload = getattr(packet, match.group(2), None)
            if isinstance(overload, torch._ops.OpOverload):
                return
    raise zf.refuse(
        zf.full(PROGRAM),
        f"node target {peer_text(target, 96)} is not an ATen operator; a half splitwire exports "
        "calls ATen operators only (torch.ops.aten.NAME.OVERLOAD)",
    )


def _is_size_expr(text: str) -> bool:
    tree = _parse_expression(text, _EXPR_CHARS)
    if tree is None:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS
        elif isinstance(node, ast.Name):
            ok = node.id in _SYMPY_CALLS | _SYMPY_NAMES or bool(_SYMBOL.fullmatch(node.id))
        elif isinstance(node, ast.Constant):
            value = node.value
            # A string argument is sympified again: only symbol names and numbers.
            ok = isinstance(value, int | float) or (
                isinstance(value, str)
                and bool(_SYMBOL.fullmatch(value) or _NUMBER.fullmatch(value))
            )
        elif isinstance(node, ast.keyword):
            ok = node.arg in _SYMPY_KEYWORDS
        else:
            ok = isinstance(node, _EXPR_NODES)
        if not ok:
            return False
    return True


def _is_size_guard(text: str) -> bool:
    tree = _parse_expression(text, _GUARD_CHARS)
    if tree is None:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            ok = node.id == "L"
        elif isinstance(node, ast.Attribute):
            ok = node.attr in _GUARD_METHODS and isinstance(node.value, ast.Subscript)
        elif isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Attribute) and not node.keywords
        elif isinstance(node, ast.Subscript):
            ok = isinstance(node.slice, ast.Constant)
        elif isinstance(node, ast.Constant):
            value = node.value
            ok = isinstance(value, int) or (
                isinstance(value, str) and bool(_IDENTIFIER.fullmatch(value))
            )
        else:
            ok = isinstance(node, _GUARD_NODES)
        if not ok:
            return False
    return True


def _parse_expression(text: str, chars: re.Pattern[str]) -> ast.Expression | None:
    if len(text) > MAX_EXPR_CHARS or not chars.fullmatch(text):
        return None
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
