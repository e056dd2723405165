"""Data profiles made of mergeable sketches: what a site sends instead of rows.

A :class:`DatasetProfile` maps feature names to column profiles:

- numeric columns: an Apache DataSketches KLL sketch (k=200, ~1.3 % rank error at 99 %
  confidence) plus exact count and missing; min and max come from the sketch;
- categorical columns (strings, bytes, objects): a frequent-items sketch plus count and
  missing.

Both sketch kinds merge exactly (merging the windows of many sites gives the sketch of
the union), so the hub can combine any set of windows and compare the result with the
reference profile computed over the training data on the user's machine.

Privacy: a sketch keeps a small sample of the values it saw, so two rules make sure no
individual value can leave in one. Numbers are *generalised* before sketching: the
mantissa is truncated to :data:`MANTISSA_BITS` bits (relative change at most 2**-10,
about 0.1 %, an order of magnitude under the sketch's own rank error). Categories seen
fewer than :data:`MIN_CATEGORY_COUNT` times in a profile are folded into one
:data:`OTHER` bucket when it is serialised (a k-anonymity style threshold).

The fixed latency and batch-size histograms sites and the hub share are in
:mod:`modelfleet.monitoring.histograms`.
"""

from __future__ import annotations

import base64
import csv
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasketches import (
    frequent_items_error_type,
    frequent_strings_sketch,
    kll_doubles_sketch,
)

from modelfleet.errors import InvalidInput
from modelfleet.monitoring.sketch_bytes import MAX_SKETCH_BYTES, read_frequent_items, read_kll

__all__ = [
    "OTHER",
    "CategoricalProfile",
    "DatasetProfile",
    "NumericProfile",
    "generalise",
    "profile_array",
    "profile_csv",
    "tensor_columns",
]

#: Profile format version, checked when a profile is read back.
FORMAT = 1
#: KLL accuracy parameter: 200 is DataSketches' default (normalised rank error ~1.33 %).
KLL_K = 200
#: log2 of the frequent-items map size: 128 slots track up to 96 distinct items exactly.
FREQ_LG_MAX = 7
#: Mantissa bits kept when generalising numbers (float32 keeps 23, float64 52).
MANTISSA_BITS = 10
#: Categories seen fewer times than this are folded into :data:`OTHER` on serialisation.
MIN_CATEGORY_COUNT = 5
#: The bucket that holds rare categories.
OTHER = "__other__"
#: A 2-D tensor with more columns than this is profiled as one flattened feature.
MAX_COLUMNS = 64
#: The most columns one profile may hold (a window's inputs or outputs, a reference):
#: what the hub parses from one message is bounded by this times the sketch size cap.
MAX_PROFILE_COLUMNS = 512

# --- generalisation ---------------------------------------------------------------------


def generalise(values: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Numbers as float64 with the mantissa truncated to :data:`MANTISSA_BITS` bits.

    Bit masking is exact, branch-free and vectorised: it rounds toward zero, keeps the
    sign, exponent, zeros, infinities and NaN as they are.
    """
    as_float = np.asarray(values, dtype=np.float64)
    bits = np.ascontiguousarray(as_float).view(np.uint64)
    mask = np.uint64(~((1 << (52 - MANTISSA_BITS)) - 1) & 0xFFFF_FFFF_FFFF_FFFF)
    return (bits & mask).view(np.float64)


# --- column profiles ------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{what}: expected a base64 string")
    if len(text) > (MAX_SKETCH_BYTES // 3 + 1) * 4:
        raise InvalidInput(f"{what}: sketch exceeds {MAX_SKETCH_BYTES} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise InvalidInput(f"{what}: not base64: {exc}") from exc


def _count(doc: Mapping[str, Any], key: str, what: str) -> int:
    value = doc.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{what}: {key} must be a non-negative integer")
    return value


@dataclass
class NumericProfile:
    """A numeric column: KLL sketch of the (generalised) finite values, count, missing."""

    count: int = 0  # values offered, missing included
    missing: int = 0  # NaN and +-inf
    sketch: kll_doubles_sketch = field(default_factory=lambda: kll_doubles_sketch(KLL_K))

    kind = "numeric"

    def update(self, values: np.ndarray[Any, Any]) -> None:
        data = generalise(values.ravel())
        finite = np.isfinite(data)
        kept = data if bool(finite.all()) else data[finite]
        self.count += int(data.size)
        self.missing += int(data.size - kept.size)
        if kept.size:
            self.sketch.update(np.ascontiguousarray(kept))

    def merge(self, other: NumericProfile) -> None:
        self.count += other.count
        self.missing += other.missing
        self.sketch.merge(other.sketch)

    @property
    def n(self) -> int:
        """Values in the sketch."""
        return int(self.sketch.n)

    @property
    def min(self) -> float | None:
        return None if self.sketch.is_empty() else float(self.sketch.get_min_value())

    @property
    def max(self) -> float | None:
        return None if self.sketch.is_empty() else float(self.sketch.get_max_value())

    def rank_error(self) -> float:
        """The sketch's normalised rank error bound over all queries (99 % confidence)."""
        return float(self.sketch.normalized_rank_error(True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "min": self.min,
            "max": self.max,
            "kll": _b64(self.sketch.serialize()),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], what: str) -> NumericProfile:
        sketch = read_kll(_unb64(doc.get("kll"), what), what)
        return cls(_count(doc, "count", what), _count(doc, "missing", what), sketch)


@dataclass
class CategoricalProfile:
    """A categorical column: frequent-items sketch of the values as text, count, missing."""

    count: int = 0
    missing: int = 0  # None and empty values
    sketch: frequent_strings_sketch = field(
        default_factory=lambda: frequent_strings_sketch(FREQ_LG_MAX)
    )

    kind = "categorical"

    def update(self, values: np.ndarray[Any, Any]) -> None:
        self.count += int(values.size)
        uniques, counts = np.unique(
            np.asarray([_text(v) for v in values.ravel()]), return_counts=True
        )
        for value, weight in zip(uniques.tolist(), counts.tolist(), strict=True):
            if value == "":
                self.missing += int(weight)
            else:
                self.sketch.update(str(value), int(weight))

    def merge(self, other: CategoricalProfile) -> None:
        self.count += other.count
        self.missing += other.missing
        self.sketch.merge(other.sketch)

    @property
    def n(self) -> int:
        return int(self.sketch.total_weight)

    def frequencies(self) -> dict[str, float]:
        """Estimated count per category; whatever the sketch lost goes to :data:`OTHER`."""
        items = self.sketch.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES, 0)
        freq: dict[str, float] = {}
        for item, estimate, _lower, _upper in items:
            freq[str(item)] = freq.get(str(item), 0.0) + float(estimate)
        rest = float(self.sketch.total_weight) - sum(freq.values())
        if rest > 0:
            freq[OTHER] = freq.get(OTHER, 0.0) + rest
        return freq

    def generalised(self) -> CategoricalProfile:
        """A copy whose rare categories are folded into :data:`OTHER`."""
        out = CategoricalProfile(self.count, self.missing)
        other = 0
        for item, estimate in self.frequencies().items():
            weight = round(estimate)
            if item == OTHER or weight < MIN_CATEGORY_COUNT:
                other += weight
            elif weight > 0:
                out.sketch.update(item, weight)
        if other > 0:
            out.sketch.update(OTHER, other)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "items": _b64(self.generalised().sketch.serialize()),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], what: str) -> CategoricalProfile:
        sketch = read_frequent_items(_unb64(doc.get("items"), what), what)
        return cls(_count(doc, "count", what), _count(doc, "missing", what), sketch)


ColumnProfile = NumericProfile | CategoricalProfile


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)


def is_numeric(values: np.ndarray[Any, Any]) -> bool:
    return values.dtype.kind in "biuf"


def tensor_columns(
    name: str, array: np.ndarray[Any, Any]
) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    """Split a tensor into named feature columns, the naming shared by sites and SDK.

    ``[batch]`` and ``[batch, 1]`` -> ``name``; ``[batch, F]`` -> ``name[0]`` ...
    ``name[F-1]``; anything wider or of higher rank -> ``name`` over all its values.
    """
    data = np.asarray(array)
    if data.ndim <= 1 or (data.ndim == 2 and data.shape[1] == 1):
        yield name, data.ravel()
    elif data.ndim == 2 and data.shape[1] <= MAX_COLUMNS:
        for j in range(data.shape[1]):
            yield f"{name}[{j}]", data[:, j]
    else:
        yield name, data.ravel()


@dataclass
class DatasetProfile:
    """Named column profiles; ``labels`` maps a feature to a human name (a CSV header)."""

    columns: dict[str, ColumnProfile] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def update_column(self, name: str, values: np.ndarray[Any, Any]) -> None:
        """Add values to a column, creating it with the kind the values suggest."""
        column = self.columns.get(name)
        if column is None:
            column = NumericProfile() if is_numeric(values) else CategoricalProfile()
            self.columns[name] = column
        if isinstance(column, NumericProfile) and not is_numeric(values):
            raise InvalidInput(f"feature {name!r} was numeric and now receives text")
        column.update(values)

    def update_tensor(self, name: str, array: np.ndarray[Any, Any]) -> None:
        for column, values in tensor_columns(name, array):
            self.update_column(column, values)

    def merge(self, other: DatasetProfile) -> None:
        """Fold ``other`` in; a feature whose kind differs is refused."""
        for name, column in other.columns.items():
            mine = self.columns.get(name)
            if mine is None:
                self.columns[name] = _copy(column)
            elif isinstance(mine, NumericProfile) and isinstance(column, NumericProfile):  # noqa: SIM114
                mine.merge(column)
            elif isinstance(mine, CategoricalProfile) and isinstance(column, CategoricalProfile):
                mine.merge(column)
            else:
                raise InvalidInput(f"feature {name!r} is {mine.kind} here, {column.kind} there")
        for key, label in other.labels.items():
            self.labels.setdefault(key, label)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "columns": {name: col.to_dict() for name, col in sorted(self.columns.items())},
        }
        if self.labels:
            doc["labels"] = dict(self.labels)
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> DatasetProfile:
        if not isinstance(doc, Mapping):
            raise InvalidInput("a profile must be a JSON object")
        if doc.get("format", FORMAT) != FORMAT:
            raise InvalidInput(f"unsupported profile format {doc.get('format')!r}")
        columns = doc.get("columns", {})
        labels = doc.get("labels", {})
        if not isinstance(columns, Mapping) or not isinstance(labels, Mapping):
            raise InvalidInput("profile columns and labels must be objects")
        if len(columns) > MAX_PROFILE_COLUMNS or len(labels) > MAX_PROFILE_COLUMNS:
            raise InvalidInput(
                f"a profile holds at most {MAX_PROFILE_COLUMNS} columns, got {len(columns)}"
            )
        out = cls(labels={str(k)[:256]: str(v)[:256] for k, v in labels.items()})
        for name, col in columns.items():
            what = f"profile column {name!r}"
            if not isinstance(col, Mapping):
                raise InvalidInput(f"{what} must be an object")
            kind = col.get("kind")
            if kind == NumericProfile.kind:
                out.columns[str(name)] = NumericProfile.from_dict(col, what)
            elif kind == CategoricalProfile.kind:
                out.columns[str(name)] = CategoricalProfile.from_dict(col, what)
            else:
                raise InvalidInput(f"{what} has unknown kind {kind!r}")
        return out


def _copy(column: ColumnProfile) -> ColumnProfile:
    if isinstance(column, NumericProfile):
        return NumericProfile.from_dict(column.to_dict(), "copy")
    copy = CategoricalProfile(column.count, column.missing)
    copy.sketch.merge(column.sketch)
    return copy


def merge_profiles(profiles: Iterable[DatasetProfile]) -> DatasetProfile:
    out = DatasetProfile()
    for profile in profiles:
        out.merge(profile)
    return out


# --- SDK ----------------------------------------------------------------------------------


def profile_array(
    data: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]],
    *,
    input_name: str = "X",
    labels: Sequence[str] | None = None,
) -> DatasetProfile:
    """Profile training data the way a site profiles what it serves.

    ``data`` is either one ``[rows, features]`` array for a model whose single input is
    ``input_name`` (features are named ``X[0]``, ``X[1]``, ...), or a mapping of input
    name to array for a model with several inputs. ``labels`` optionally names the
    columns of the single array for display (e.g. the CSV header).
    """
    profile = DatasetProfile()
    if isinstance(data, Mapping):
        for name, array in data.items():
            profile.update_tensor(name, np.asarray(array))
        return profile
    array = np.asarray(data)
    profile.update_tensor(input_name, array)
    if labels is not None:
        keys = [key for key, _ in tensor_columns(input_name, array[:1])]
        if len(keys) == len(labels):
            profile.labels = dict(zip(keys, labels, strict=True))
    return profile


def read_csv(
    path: str | Path, columns: Sequence[str] | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """Columns of a CSV with a header row: numeric where every non-empty cell parses."""
    file = Path(path)
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise InvalidInput(f"{file}: empty CSV (a header row is required)")
            cells: list[list[str]] = [[] for _ in header]
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise InvalidInput(
                        f"{file}:{line}: {len(row)} fields where the header has {len(header)}"
                    )
                for index, cell in enumerate(row):
                    cells[index].append(cell.strip())
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{file} is not UTF-8 text: {exc}") from exc
    wanted = list(columns) if columns else [h.strip() for h in header]
    names = [h.strip() for h in header]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise InvalidInput(f"{file} has no column {missing[0]!r} (has {', '.join(names)})")
    out: dict[str, np.ndarray[Any, Any]] = {}
    for column in wanted:
        values = cells[names.index(column)]
        try:
            out[column] = np.array([float(v) if v else math.nan for v in values], np.float64)
        except ValueError:
            out[column] = np.array(values, dtype=object)
    return out


def profile_csv(
    path: str | Path,
    *,
    columns: Sequence[str] | None = None,
    inputs: Sequence[Mapping[str, Any]] | None = None,
) -> DatasetProfile:
    """Profile a CSV of training data; only sketches come out, never rows.

    ``inputs`` is the model's input signature (``[{"name", "shape"}, ...]`` as the hub
    and :func:`modelfleet.registry.onnx_info.inspect_onnx` describe it). When every
    chosen column is named after an input, each becomes that input's feature; when the
    model has one ``[batch, F]`` input and F columns are chosen, column *i* becomes
    feature ``NAME[i]`` and keeps its header as label. Without ``inputs`` columns keep
    their names.
    """
    table = read_csv(path, columns)
    names = list(table)
    input_names = [str(spec["name"]) for spec in inputs or []]
    if not inputs or set(names) <= set(input_names):
        profile = DatasetProfile()
        for name in names:
            profile.update_column(name, table[name])
        return profile
    if len(inputs) == 1:
        shape = list(inputs[0].get("shape") or [])
        width = shape[1] if len(shape) == 2 else None
        if width in (None, -1, len(names)):
            numeric = [n for n in names if table[n].dtype.kind == "f"]
            if len(numeric) != len(names):
                raise InvalidInput(
                    f"input {input_names[0]!r} is one numeric tensor but columns "
                    f"{', '.join(n for n in names if n not in numeric)} are not numbers"
                )
            matrix = np.column_stack([table[n] for n in names])
            return profile_array(matrix, input_name=input_names[0], labels=names)
        raise InvalidInput(
            f"the model's input {input_names[0]!r} has {width} columns but {len(names)} "
            "CSV columns were chosen; pick the feature columns (SDK: columns=[...])"
        )
    raise InvalidInput(
        f"cannot map CSV columns {', '.join(names)} onto the model inputs "
        f"{', '.join(input_names)}: name the columns after the inputs"
    )


def quantiles_of(column: NumericProfile, ranks: Sequence[float]) -> list[float]:
    """Quantiles at ``ranks`` (empty sketch: empty list)."""
    if column.sketch.is_empty():
        return []
    return [float(v) for v in column.sketch.get_quantiles(list(ranks))]


def sorted_points(column: NumericProfile) -> list[float]:
    """The distinct values retained by the sketch, ascending (KS evaluation points)."""
    return sorted({float(item) for item, _weight in column.sketch})
