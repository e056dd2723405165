"""One onnxruntime session of one model version, with the checks a server needs around it.

onnxruntime converts or rejects mismatched inputs with messages that mention its own
internals, and a silent conversion (int64 ids fed as float32, say) would change answers
without anyone noticing. So feeds are checked here against the signature read once at
load time, and every onnxruntime failure is translated into :class:`ModelFailure` with a
reason code the reconciler and the server can act on without parsing messages.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from modelfleet.errors import InvalidInput, ModelFailure, NotFound
from modelfleet.oip.datatypes import OIP_TO_NUMPY, ORT_TYPE_TO_OIP

__all__ = ["LoadedModel", "TensorSpec"]

_PROVIDERS = ["CPUExecutionProvider"]
_MESSAGE_LIMIT = 500
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*")
_WHITESPACE = re.compile(r"\s+")
# Feeds onnxruntime turns into its string tensors; both are text, so nothing is converted.
_STRING_KINDS = frozenset("OU")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: OIP datatype (``None`` for non-tensor types), -1 for dynamic dims."""

    name: str
    datatype: str | None
    shape: tuple[int, ...]


def _clean_message(exc: BaseException) -> str:
    """onnxruntime messages span lines and carry a status prefix; logs and HTTP want one line."""
    text = _WHITESPACE.sub(" ", _ORT_PREFIX.sub("", str(exc).strip())).strip()
    if not text:
        text = type(exc).__name__
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 1] + "…"
    return text


def _specs(args: list[Any]) -> list[TensorSpec]:
    specs = []
    for arg in args:
        shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape or ())
        specs.append(TensorSpec(arg.name, ORT_TYPE_TO_OIP.get(arg.type), shape))
    return specs


def _session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    for what, value in (
        ("intra_op_threads", intra_op_threads),
        ("inter_op_threads", inter_op_threads),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(
                f"{what} must be an integer >= 0 (0: onnxruntime decides), got {value!r}"
            )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    # Memory pattern planning and the arena pay off on CPU when shapes repeat, as batches do.
    options.enable_mem_pattern = True
    options.enable_cpu_mem_arena = True
    # Errors reach callers as exceptions; onnxruntime's own warnings would only add noise.
    options.log_severity_level = 3
    return options


class LoadedModel:
    """A ready session plus the facts about it that every request needs, computed once.

    Instances are immutable after :meth:`load` and safe to share between threads:
    ``InferenceSession.run`` is thread-safe and releases the GIL while it computes.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        path: Path,
        name: str,
        version: int,
        digest: str,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.name = name
        self.version = version
        self.digest = digest
        #: Serving parameters of the assignment (e.g. ``max_batch_size``), read-only.
        self.params: Mapping[str, Any] = MappingProxyType(dict(params or {}))
        self._session = session
        self._inputs = _specs(session.get_inputs())
        self._outputs = _specs(session.get_outputs())
        self._output_names = [spec.name for spec in self._outputs]
        self._output_name_set = frozenset(self._output_names)
        self._input_name_set = frozenset(spec.name for spec in self._inputs)
        # (name, OIP datatype or None, numpy dtype a numeric feed must have exactly)
        self._checks: list[tuple[str, str | None, np.dtype[Any] | None]] = [
            (spec.name, spec.datatype, _numeric_dtype(spec.datatype)) for spec in self._inputs
        ]
        self._first_dim_dynamic = bool(self._inputs) and all(
            spec.shape[:1] == (-1,) for spec in self._inputs
        )
        self._batchable = self._first_dim_dynamic and all(
            spec.shape[:1] == (-1,) and spec.datatype is not None for spec in self._outputs
        )

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        name: str,
        version: int,
        digest: str,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        params: Mapping[str, Any] | None = None,
    ) -> LoadedModel:
        """Create the session; ``digest`` is recorded, not checked (the caller verified it).

        One intra-op thread by default because a site serves many requests concurrently:
        parallelism across requests beats parallelism inside one small model.
        """
        options = _session_options(intra_op_threads, inter_op_threads)
        if not path.is_file():
            raise NotFound(f"model file {path} does not exist")
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=_PROVIDERS)
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise ModelFailure(
                f"onnxruntime cannot load {name}:{version}: {_clean_message(exc)}",
                code="session_error",
            ) from exc
        return cls(session, path=path, name=name, version=version, digest=digest, params=params)

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    @property
    def first_dim_dynamic(self) -> bool:
        """Every input's first dimension is dynamic, so requests can be stacked into a batch."""
        return self._first_dim_dynamic

    @property
    def batchable(self) -> bool:
        """Every input and output is a tensor with a dynamic first dimension: rows of several
        requests can be concatenated and the outputs split back by row."""
        return self._batchable

    def warm_up(self) -> float:
        """Run once on neutral inputs; seconds taken. A model that cannot run must not serve.

        The first run also pays for lazy allocations, so doing it before activation keeps
        that cost off the first client's request.
        """
        feeds: dict[str, np.ndarray[Any, Any]] = {}
        for spec in self._inputs:
            if spec.datatype is None:
                raise ModelFailure(
                    f"{self}: input {spec.name!r} is not a tensor; cannot build a warm-up input",
                    code="warmup_error",
                )
            shape = tuple(1 if dim < 0 else dim for dim in spec.shape)
            if spec.datatype == "BYTES":
                feeds[spec.name] = np.full(shape, "", dtype=object)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=OIP_TO_NUMPY[spec.datatype])
        started = time.perf_counter()
        try:
            self._session.run(self._output_names, feeds)
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise ModelFailure(
                f"{self} fails on its warm-up input: {_clean_message(exc)}", code="warmup_error"
            ) from exc
        return time.perf_counter() - started

    def run(
        self,
        feeds: dict[str, np.ndarray[Any, Any]],
        output_names: list[str] | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Outputs by name; refuses rather than converts a feed of the wrong dtype."""
        if feeds.keys() != self._input_name_set:
            self._refuse_names(feeds)
        for name, datatype, expected in self._checks:
            feed = feeds[name]
            if not isinstance(feed, np.ndarray):
                raise InvalidInput(
                    f"input {name!r} must be a numpy array, got {type(feed).__name__}"
                )
            dtype = feed.dtype
            if expected is not None:
                if dtype != expected:
                    raise InvalidInput(f"input {name!r} expects {datatype} but got numpy {dtype}")
            elif datatype == "BYTES":
                if dtype.kind not in _STRING_KINDS:
                    raise InvalidInput(f"input {name!r} expects BYTES but got numpy {dtype}")
            else:
                raise InvalidInput(f"input {name!r} is not a tensor; it cannot be fed an array")
        if output_names is None:
            names = self._output_names
        else:
            names = output_names
            if not self._output_name_set.issuperset(names):
                unknown = sorted(set(names) - self._output_name_set)
                raise InvalidInput(
                    f"unknown output(s) {unknown} for {self}; it has {self._output_names}"
                )
        try:
            results = self._session.run(names, feeds)
        except ort_state.InvalidArgument as exc:
            raise ModelFailure(_clean_message(exc), code="inference_error", status=400) from exc
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise ModelFailure(_clean_message(exc), code="inference_error") from exc
        return dict(zip(names, results, strict=True))

    def _refuse_names(self, feeds: dict[str, Any]) -> None:
        missing = sorted(self._input_name_set - feeds.keys())
        extra = sorted(feeds.keys() - self._input_name_set)
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unknown input(s) {extra}")
        raise InvalidInput(
            f"{'; '.join(parts)} for {self}; it takes {sorted(self._input_name_set)}"
        )

    def __repr__(self) -> str:
        return f"LoadedModel({self.name}:{self.version}, {self.digest[:19]})"

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


def _numeric_dtype(datatype: str | None) -> np.dtype[Any] | None:
    """The exact numpy dtype a feed must have; ``None`` for strings and non-tensor inputs."""
    if datatype is None or datatype == "BYTES":
        return None
    return OIP_TO_NUMPY[datatype]
