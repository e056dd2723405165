"""Every event type the code emits is declared in ``EVENT_TYPES``, listed in the docstring of
``modelfleet.hub.events`` and has a row in docs/events.md's table — and nothing is declared
or documented that no code emits.

Emitted types are read from the source with :mod:`ast`, not imported. An *emitter* is a
function or method named ``emit``, ``_emit``, ``tell`` or ``_tell`` with a parameter named
``type`` or ``kind`` (``Events.emit`` and the helpers that wrap it, e.g. the follower's
``_emit`` and the anomaly loop's ``_tell``); at every call of one, the string given for that
parameter (by position or keyword) is an emitted type. Tables that map outcomes to types (an
assignment to a name ending in ``_EVENT`` or ``_EVENTS``, such as the rollout history's
outcome -> type) count too. A type computed by an f-string (``f"evaluation.{state}"``)
cannot be read: it must be listed in :data:`COMPUTED` with the types it takes, so a new
computed type fails here until someone says what it is. A type passed in a variable is read
where the variable's value is written (a helper's call, a table).

New families (``pipeline.*`` and whatever comes next) need nothing here: emit them, declare
them, document them.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import modelfleet
from modelfleet.hub import events

SRC = Path(modelfleet.__file__).parent
DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"

#: A type: dotted lower-case words, as ``hub/events.py`` validates them.
TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
EMITTERS = re.compile(r"^_?(emit|tell)$")
TABLES = re.compile(r"_EVENTS?$")

#: Computed types -> every type they can be (read from the emitter; keep in step with it).
COMPUTED = {
    # hub/evaluations.py: f"evaluation.{state}" with state "completed" or "failed"
    "evaluation.{}": {"evaluation.completed", "evaluation.failed"},
    # hub/pipelines.py: f"pipeline.{state}" for a run's end state
    "pipeline.{}": {"pipeline.promoted", "pipeline.kept", "pipeline.failed"},
}


@dataclass(frozen=True)
class Found:
    type: str
    where: str  # path:line, for the failure message


def _callee(node: ast.Call) -> str:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return ""


def _template(node: ast.JoinedStr) -> str:
    return "".join(
        str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values
    )


def _table_values(node: ast.expr) -> Iterator[ast.expr]:
    if isinstance(node, ast.Dict):
        yield from node.values
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        yield from node.elts


def _targets(node: ast.Assign | ast.AnnAssign) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _type_positions(trees: list[ast.Module]) -> dict[str, set[int]]:
    """Emitter name -> the positions of its ``type``/``kind`` parameter (``self`` dropped)."""
    positions: dict[str, set[int]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and EMITTERS.match(node.name):
                params = [a.arg for a in node.args.posonlyargs + node.args.args]
                if params and params[0] in ("self", "cls"):
                    params = params[1:]
                for index, param in enumerate(params):
                    if param in ("type", "kind"):
                        positions.setdefault(node.name, set()).add(index)
    return positions


def _literal(node: ast.expr) -> str | None:
    """The string ``node`` is when it is a literal shaped like a type, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if TYPE_RE.match(node.value) else None
    return None


def _type_args(node: ast.Call, positions: set[int]) -> Iterator[ast.expr]:
    for index in positions:
        if index < len(node.args):
            yield node.args[index]
    yield from (k.value for k in node.keywords if k.arg in ("type", "kind"))


def scan(root: Path) -> tuple[list[Found], list[Found]]:
    """(the types emitted, the computed types not in COMPUTED) under ``root``."""
    paths = sorted(root.rglob("*.py"))
    trees = [ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in paths]
    emitters = _type_positions(trees)
    emitted: list[Found] = []
    unknown: list[Found] = []
    for path, tree in zip(paths, trees, strict=True):
        for node in ast.walk(tree):
            where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and _callee(node) in emitters:
                for arg in _type_args(node, emitters[_callee(node)]):
                    if (kind := _literal(arg)) is not None:
                        emitted.append(Found(kind, where))
                    elif isinstance(arg, ast.JoinedStr):
                        shape = _template(arg)
                        if shape in COMPUTED:
                            emitted.extend(Found(t, where) for t in COMPUTED[shape])
                        else:
                            unknown.append(Found(shape, where))
            elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                names = [n for n in _targets(node) if TABLES.search(n) and n != "EVENT_TYPES"]
                if names:
                    kinds = (_literal(value) for value in _table_values(node.value))
                    emitted.extend(Found(k, where) for k in kinds if k is not None)
    return emitted, unknown


def documented_types(text: str) -> set[str]:
    """The types in the first column of the table under docs/events.md's ``## Events``."""
    section = text.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    found: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        found.update(t for t in re.findall(r"`([^`]+)`", first) if TYPE_RE.match(t))
    return found


def docstring_types() -> set[str]:
    """The types in the indented list of ``modelfleet.hub.events``'s docstring."""
    text = events.__doc__ or ""
    lines = [line for line in text.splitlines() if line.startswith("    ")]
    return {word for line in lines for word in line.split() if TYPE_RE.match(word)}


def test_the_scan_reads_emit_calls_helpers_tables_and_computed_types(tmp_path: Path) -> None:
    """The scanner itself, on a made-up module: each way a type reaches ``emit``."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(
        """
_OUTCOME_EVENT = {"fail": "demo.failed"}
class Events:
    def emit(self, type, subject, payload=None, *, key=None): ...
class Loop:
    def _emit(self, kind, d): ...
    def _tell(self, events, kind, name, payload): ...
def run(events, kind, state):
    events.emit("demo.started", "s.subject", {}, key="demo/1")
    events.emit(type="demo.keyword", subject="s")
    self._emit("demo.blocked", d)
    self._tell(events, "demo.opened", "demo.name", {})
    events.emit(f"evaluation.{state}", "s")
    events.emit(f"demo.{state}", "s")
    events.emit(kind, "modelfleet.hub.events")  # a variable: its literals are read elsewhere
    log.info("demo.logged")
""",
        encoding="utf-8",
    )
    emitted, unknown = scan(package)
    assert {f.type for f in emitted} == {
        "demo.failed",
        "demo.started",
        "demo.keyword",
        "demo.blocked",
        "demo.opened",
        "evaluation.completed",
        "evaluation.failed",
    }
    assert [f.type for f in unknown] == ["demo.{}"]


def test_every_emitted_type_is_declared_and_documented_and_none_is_made_up() -> None:
    emitted, unknown = scan(SRC)
    assert not unknown, (
        "an event type computed by an f-string: list the types it can take in COMPUTED "
        f"(tests/docs/test_event_types_documented.py): {unknown}"
    )
    kinds = {f.type for f in emitted}
    declared = set(events.EVENT_TYPES)
    documented = documented_types(DOCS.read_text(encoding="utf-8"))
    where = {f.type: f.where for f in emitted}

    missing = sorted(kinds - declared)
    assert not missing, f"emitted but not in EVENT_TYPES: {[(t, where[t]) for t in missing]}"
    undocumented = sorted(kinds - documented)
    assert not undocumented, (
        f"emitted but without a row in docs/events.md: {[(t, where[t]) for t in undocumented]}"
    )
    assert sorted(declared - kinds) == [], "in EVENT_TYPES but emitted nowhere"
    assert sorted(documented - kinds) == [], "documented in docs/events.md but emitted nowhere"
    assert len(events.EVENT_TYPES) == len(declared), "EVENT_TYPES lists a type twice"
    assert docstring_types() == declared, "hub/events.py's docstring and EVENT_TYPES differ"


def test_the_docs_say_nothing_is_reserved_or_left_to_do() -> None:
    text = DOCS.read_text(encoding="utf-8") + (events.__doc__ or "")
    assert not re.search(r"\breserved\b|\bTODO\b", text, re.IGNORECASE)
