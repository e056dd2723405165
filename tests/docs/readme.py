"""What the docs test knows about the README's five-minute tour.

The tour's blocks run in page order in one directory and one environment, as a reader would
run them (:mod:`tests.docs.tour`). What the test changes is listed here and nowhere else:

- :data:`PORTS`: the README's fixed ports become ports reserved for the test (other test
  sessions may run on the machine);
- :data:`README_PLACEHOLDERS`: the values a reader copies from an earlier output (a token,
  an id);
- :data:`NOT_RUN`: lines that cannot run here, with the reason;
- :data:`FASTER`: settings that only make asynchronous things happen sooner.

Each command's output is checked against :data:`README_EXPECT`, what the README says it shows.
"""

from __future__ import annotations

from pathlib import Path

from tests.docs.blocks import Block, section_blocks
from tests.docs.tour import Expect, Placeholder, Table

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

#: The ports the README and the guides name, each replaced by a port reserved for the test.
PORTS = (8700, 8800, 8801, 8802, 8900, 8901)

#: Lines of the tour that are not run, and why.
NOT_RUN = {
    "python3 -m venv .venv": "installs modelfleet: the test runs in the venv `make test` made, "
    "with its bin/ first on PATH, as `source .venv/bin/activate` leaves it",
}

#: Settings that change no behaviour the README describes, only how soon it is seen: the
#: sites' telemetry windows (10 s by default) close every second.
FASTER = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "1",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.5",
}

TOKEN = r"\bmf_[A-Za-z0-9_-]{20,}"
ENROLLMENT = r"\bmfe_[A-Za-z0-9_-]+@[A-Za-z0-9_-]+"


README_PLACEHOLDERS = (
    Placeholder("mf_...", r"MODELFLEET_TOKEN=", r"^modelfleet hub init", TOKEN),
    Placeholder("mf_...", r"export INFER_TOKEN=", r"token create --role infer --name app", TOKEN),
    Placeholder("mf_...", r"GATEWAY_INFER_TOKEN=", r"token create .*--name edge-gw", TOKEN),
    Placeholder("mfe_...@...", r"eu-state", r"^modelfleet site add plant-eu-west", ENROLLMENT),
    Placeholder("mfe_...@...", r"us-state", r"^modelfleet site add plant-us-east", ENROLLMENT),
    Placeholder("mfe_...@...", r"ap-state", r"^modelfleet site add plant-ap-south", ENROLLMENT),
    Placeholder("<id>", r"rollout status", r"^modelfleet deploy (?!.*--plan)", r"\br-[0-9a-f]{6,}"),
    Placeholder("<id>", r"token revoke", r"--role operator --name ci", r"\btoken ([0-9a-f]{8,})\b"),
)


SITES = ("plant-eu-west", "plant-us-east", "plant-ap-south")

README_EXPECT = (
    Expect(r"^modelfleet hub init", (TOKEN, r"fingerprint sha256:")),
    Expect(r"^export "),
    # Names may be wrapped or shortened to fit a table: their first part is enough.
    Expect(
        r"^modelfleet status --watch",
        (r"plant-eu", r"plant-us", r"plant-ap", r"machine-health:1"),
        watch=True,
    ),
    Expect(r"^modelfleet status$", (r"no sites yet: modelfleet site add",)),
    Expect(r"^python readme-2", ()),
    Expect(r"^modelfleet model push", (r"machine-health:1 @production", r"signed")),
    Expect(
        r"^modelfleet model ls ; modelfleet model show",
        (r"production", r"X:FP32\[\?,6\]", r"eu-west, us-east"),
    ),
    Expect(r"^modelfleet model pull", (r"m\.onnx .*verified",)),
    Expect(r"^modelfleet site add", (ENROLLMENT,)),
    Expect(r"^modelfleet site ls", tuple(rf"{s[:8]}.*\bonline\b" for s in SITES), until=True),
    Expect(r"^modelfleet policy apply", (r"plant-data-stays-in-eu-us",)),
    Expect(
        r"deploy .*--plan",
        (r"plant-ap-south", r"plant-data-stays-in-eu-us", r"\bIN\b", r"(?i)refused"),
        code=1,
    ),
    Expect(r"^modelfleet deploy", (r"\br-[0-9a-f]{6,}",)),
    Expect(r"^modelfleet rollout status", (r"\bsucceeded\b", r"plant-eu-w", r"plant-us-e")),
    Expect(r"^modelfleet apply -f fleet\.yaml", (r"no changes",)),
    Expect(r"^modelfleet token create --role infer --name eu-pumps", (TOKEN, r"eu-pumps")),
    Expect(r"^modelfleet token create", (TOKEN,)),
    Expect(r"^python readme-5", (r"^plant-eu-west \[",)),
    Expect(r"^modelfleet hub cert issue", (r"modelfleet://gateway/edge-gw", r"cert\.pem")),
    Expect(r"^curl ", (r'"name"\s*:\s*"label"', r'"model_name"\s*:\s*"machine-health"')),
    Expect(r"^modelfleet drift", (r"(?i)\bpsi\b", r"X\[0\]", r"plant-eu-west"), until=True),
    Expect(r"^modelfleet audit", (r"model\.push", r"deploy", r"site\.add")),
    Expect(r"^modelfleet fl init", (r"machine-health-fl",)),
    Expect(r"^modelfleet fl start", (r"tour-1",)),
    Expect(
        r"^modelfleet fl status",
        (r"\bcompleted\b", r"machine-health-fl:2", r"plant-ap-s.*refused", r"plant-us-e"),
    ),
    Expect(r"^modelfleet token ls ; modelfleet token revoke", (r"\bci\b", r"(?i)revoked")),
    Expect(r"^modelfleet hub token recover", (TOKEN,)),
)


README_TABLE = Table(README_EXPECT, README_PLACEHOLDERS, NOT_RUN)


def tour_blocks() -> list[Block]:
    """The blocks of the README from "Five-minute tour" up to "SDK"."""
    return section_blocks(README, "Five-minute tour", "SDK")
