"""The fuzzed models behind the site's production server, in a process of their own.

``python -m tests.site.serve_models DIR READY_FILE`` builds the models in DIR, listens on a
free port (port 0) and writes ``{"pid", "port"}`` to READY_FILE once it listens
(:mod:`modelfleet.transport.listen`), then serves until SIGTERM. Measurements of that process
(its own memory, say) are then about the server alone, not about the test runner.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelfleet.site.repository import ModelRepository
from modelfleet.site.server import InferenceServer
from modelfleet.transport.listen import bind, bound_port, report_ready
from modelfleet.transport.server import serve_http
from tests.site.test_oip_conformance import add_model, identity_model, load

#: Identity models served next to "add", by datatype.
IDENTITY_TYPES = ("BYTES", "INT64", "BOOL", "FP16")


def build(root: Path) -> ModelRepository:
    repository = ModelRepository()
    repository.activate(load(add_model(root / "add.onnx", 1.0), "add", 1, max_batch_size=8))
    for datatype in IDENTITY_TYPES:
        name = f"id_{datatype.lower()}"
        repository.activate(load(identity_model(root / f"{name}.onnx", datatype), name, 1))
    return repository


def main(root: Path, ready_file: Path) -> None:
    server = InferenceServer(build(root))
    sock = bind("127.0.0.1", 0)
    report_ready(sock, ready_file)
    serve_http(
        server.app(), host="127.0.0.1", port=bound_port(sock), log_level="warning", sock=sock
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
