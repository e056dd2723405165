"""PyTorch to ONNX with torch's dynamo (``torch.export``) exporter.

Why dynamo and not the TorchScript exporter (``dynamo=False``): both export correctly with torch
2.13 here, but TorchScript export has been deprecated since torch 2.9 (it warns that "the
feature will be removed"), and the dynamo exporter is torch's default and the one that keeps up
with new operators. It needs ``onnxscript``, which the ``torch`` extra installs. There is no
silent fallback to the old exporter: a model that only the deprecated path can export would
break on the next torch upgrade, so the error says so now.

Weights are embedded (``external_data=False``): a modelfleet artifact is one self-contained file
that the hub hashes and signs as a unit.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelfleet.errors import InvalidInput, MissingDependency
from modelfleet.export._artifact import save, summarize

_INSTALL_HINT = "pip install 'modelfleet[torch]'"


def from_torch(
    module: Any,
    sample: Any,
    *,
    path: str | Path | None = None,
    input_names: Sequence[str] = ("X",),
    output_names: Sequence[str] = ("output",),
    dynamic_batch: bool = True,
    opset: int | None = None,
) -> Path:
    """Export a ``torch.nn.Module`` to a checked ONNX file and return its path.

    ``sample`` is one tensor (or anything ``torch.as_tensor`` takes), or a tuple of them for a
    module with several positional inputs. It fixes every dimension except the first when
    ``dynamic_batch`` is on, which makes dimension 0 of every input and output a shared
    ``batch`` axis. A single input is named ``X`` unless ``input_names`` says otherwise (the
    name :func:`from_sklearn` and federated models give theirs). The module is
    exported in eval mode (dropout off, batch-norm running statistics) and put back in the mode
    it was in, so a module still being trained is not silently changed by exporting it.

    Raises :class:`MissingDependency` without the ``torch`` extra and
    :class:`~modelfleet.errors.InvalidInput` for a sample or module torch cannot export.
    """
    try:
        import torch
    except ImportError as exc:
        raise MissingDependency(
            f"exporting PyTorch models needs torch and onnxscript: {_INSTALL_HINT}"
        ) from exc
    if importlib.util.find_spec("onnxscript") is None:
        raise MissingDependency(
            f"torch's ONNX exporter needs onnxscript, which is not installed: {_INSTALL_HINT}"
        )

    module_name = type(module).__name__
    if not isinstance(module, torch.nn.Module):
        raise InvalidInput(f"{module_name} is not a torch.nn.Module")
    args = _as_tensors(torch, sample)
    names = list(input_names)
    if len(names) != len(args):
        raise InvalidInput(f"{len(args)} sample input(s) but {len(names)} input name(s): {names}")
    if len(set(names) | set(output_names)) != len(names) + len(output_names):
        raise InvalidInput("input and output names must all be distinct")

    dynamic_shapes: tuple[dict[int, Any], ...] | None = None
    if dynamic_batch:
        flat = [name for name, arg in zip(names, args, strict=True) if arg.dim() == 0]
        if flat:
            raise InvalidInput(
                f"input(s) {flat} are scalars, so they have no batch dimension to make dynamic; "
                "add one (x.unsqueeze(0)) or pass dynamic_batch=False"
            )
        # One Dim object for all inputs: they share the batch size, and torch.export checks it.
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} for _ in args)

    def export(scratch: Path) -> None:
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                torch.onnx.export(
                    module,
                    args,
                    str(scratch),
                    input_names=names,
                    output_names=list(output_names),
                    opset_version=opset,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes,
                    external_data=False,
                    verbose=False,
                )
        except Exception as exc:
            # torch.export and the ONNX translator raise many unrelated types (UserError,
            # TorchExportError, UnsupportedOperatorError, RuntimeError...), all "cannot export".
            raise InvalidInput(
                f"torch could not export {module_name} to ONNX: {summarize(exc)}"
            ) from exc
        finally:
            module.train(was_training)

    return save(path, module_name, export)


def _as_tensors(torch: Any, sample: Any) -> tuple[Any, ...]:
    """The sample as the positional-argument tuple ``torch.onnx.export`` wants."""
    # Only a tuple means several inputs: a list is one nested-list array, as NumPy reads it.
    items = sample if isinstance(sample, tuple) else (sample,)
    if not items:
        raise InvalidInput("sample is empty; pass one example tensor per model input")
    tensors = []
    for position, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            tensors.append(item)
            continue
        try:
            tensors.append(torch.as_tensor(item))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidInput(
                f"sample input {position} ({type(item).__name__}) is not a tensor or array: {exc}"
            ) from exc
    return tuple(tensors)
