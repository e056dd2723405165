"""The Grafana dashboards in docs/grafana/ query only series that modelfleet really exposes.

A dashboard is checked twice. Statically: it is a Grafana dashboard model (unique panel ids,
every panel on the ``${datasource}`` Prometheus variable, targets with PromQL), and every
function it calls is a PromQL function. Against real processes: a hub, one enrolled site
(with a cascade, so its escalation counters carry samples) and a gateway run on loopback
with TLS, serve a few requests, and their ``/metrics`` are scraped with the credentials the
README's scrape config names (a viewer token at the hub, an infer token at the site and the
gateway). Every metric name a panel or template variable names must be a series one of them
exposes, and every label it matches on or groups by must be on that series or be attached
by the README's scrape config (``job``, ``instance``, the sites' ``site`` label).

Names are taken from PromQL by a small tokenizer (:mod:`tests.docs.promql`), not by a
regular expression over the text.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import (
    GatewayProcess,
    HubProcess,
    SiteProcess,
    issue_gateway_certificate,
)
from tests.conftest import write_tiny_onnx
from tests.docs.blocks import fenced_blocks
from tests.docs.promql import Expression, PromQLError, references, variable_references
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "docs" / "grafana"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))
README = GRAFANA / "README.md"

#: Series a healthy fleet exposes with no sample (a TYPE line only), so their labels cannot
#: be read off a scrape: checked by name here, by label in tests/hub/test_anomalies_api.py.
NO_SAMPLES_ON_A_HEALTHY_FLEET = {"modelfleet_anomalies_open"}

#: The README's scrape jobs, by the process they scrape.
JOBS = {"hub": "modelfleet-hub", "site": "modelfleet-sites", "gateway": "modelfleet-gateway"}
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})

MODEL = "pump"
REQUESTS = 6

# --------------------------------------------------------------------------- dashboards


def load(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise AssertionError(f"{path.name}: not a JSON object")
    return doc


def all_panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded inside a collapsed row."""
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return str(query.get("query", "") if isinstance(query, dict) else query or "")


def expressions(doc: dict[str, Any]) -> Iterator[tuple[str, Expression]]:
    """(where, what it references) of every PromQL expression of a dashboard."""
    for variable in doc["templating"]["list"]:
        if variable.get("type") == "query":
            yield f"variable ${variable['name']}", variable_references(variable_query(variable))
    for panel in all_panels(doc):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel.get('title', '')!r} target {target['refId']}"
            yield where, references(target["expr"])


@dataclass
class Exposed:
    """Series names a scrape showed, with their label names and the job that scraped them."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    job: dict[str, str] = field(default_factory=dict)

    def add(self, text: str, source: str) -> None:
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        for family in text_string_to_metric_families(text):
            # A labelled metric never observed has no samples, only its TYPE line.
            for suffix in suffixes.get(family.type, ("",)):
                self.labels.setdefault(family.name + suffix, set())
                self.job[family.name + suffix] = source
            for sample in family.samples:
                self.labels.setdefault(sample.name, set()).update(sample.labels)
                self.job[sample.name] = source


def problems(doc: dict[str, Any], exposed: Exposed, attached: dict[str, set[str]]) -> list[str]:
    """Every reference of ``doc`` to a series or label that ``exposed`` does not have.
    ``attached``: the labels each scrape job adds (from the README's scrape config)."""
    found = []
    for where, expr in expressions(doc):
        known: dict[int, set[str]] = {}
        for selector in expr.selectors:
            name = selector.metric
            if name not in exposed.labels:
                found.append(f"{where}: no series {name!r} is exposed")
                continue
            if name in NO_SAMPLES_ON_A_HEALTHY_FLEET and not exposed.labels[name]:
                continue
            labels = exposed.labels[name] | TARGET_LABELS | attached[exposed.job[name]]
            known[selector.position] = labels
            if missing := selector.labels - labels:
                found.append(f"{where}: {name} has no label {sorted(missing)}")
        for labels, start, end in expr.needs:
            for selector in expr.selectors:
                has = known.get(selector.position)
                inside = has is not None and start <= selector.position <= end
                if inside and (missing := labels - (has or set())):
                    found.append(f"{where}: {selector.metric} has no label {sorted(missing)}")
    return found


def scrape_config() -> dict[str, dict[str, Any]]:
    """The README's Prometheus scrape jobs, by job name."""
    for block in fenced_blocks(README):
        if block.lang == "yaml" and "scrape_configs:" in block.text:
            doc = yaml.safe_load(block.text)
            return {job["job_name"]: job for job in doc["scrape_configs"]}
    raise AssertionError("docs/grafana/README.md shows no scrape_configs block")


def attached_labels() -> dict[str, set[str]]:
    """The labels each job's targets carry (static labels and relabelling), by source."""
    jobs = scrape_config()
    out = {}
    for source, name in JOBS.items():
        job = jobs[name]
        labels = {k for c in job.get("static_configs", []) for k in c.get("labels", {})}
        labels |= {r["target_label"] for r in job.get("relabel_configs", []) if "target_label" in r}
        out[source] = labels
    return out


# --------------------------------------------------------------------------- a real fleet


def _body(rows: int) -> dict[str, Any]:
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    return {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": [rows, 4], "data": x.ravel().tolist()}
        ]
    }


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposed]:
    """A hub, one site serving ``pump`` behind a cascade whose cloud is away (every request
    escalates and is answered locally, degraded) and a gateway routing to the site; requests
    through both, then each one's ``/metrics`` as Prometheus would scrape it."""
    root = tmp_path_factory.mktemp("grafana")
    init = init_hub(root / "hub")
    hub = HubProcess(root / "hub").start()
    processes: list[HubProcess | SiteProcess | GatewayProcess] = [hub]
    cascade = root / "cascade.yaml"
    cascade.write_text(
        "target: https://127.0.0.1:1\ntarget_site: cloud\ndeadline_s: 0.5\n"
        f"models:\n  {MODEL}: {{always: true}}\n"
    )
    verify = ssl.create_default_context(cafile=str(hub.ca_file))
    try:
        with HubClient(hub.url, init.admin_token, ca_file=hub.ca_file) as admin:
            admin.push(write_tiny_onnx(root / "pump.onnx"), MODEL)
            enrollment = admin.add_site("plant-a", {"jurisdiction": "EU"})["enrollment_token"]
            admin.assign("plant-a", f"{MODEL}:1")
            viewer = admin.create_token("prometheus", "viewer").token
            infer = admin.create_token("prometheus-sites", "infer").token
            gateway_token = admin.create_token("gateway", "infer").token
            site = SiteProcess(
                root / "site-a",
                hub.url,
                enrollment,
                extra_env={
                    "MODELFLEET_SITE_CASCADE_FILE": str(cascade),
                    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "0.2",
                    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.2",
                },
            )
            processes.append(site.start(60))
            gateway = GatewayProcess(
                ["--hub", hub.url, "--data-region", "EU"],
                extra_env={"MODELFLEET_TOKEN": gateway_token},
                tls_dir=issue_gateway_certificate(root / "hub", root / "gateway-tls"),
            )
            processes.append(gateway.start(60))
            auth = {"Authorization": f"Bearer {infer}"}
            with httpx.Client(verify=verify, headers=auth, timeout=30) as http:
                infer_url = f"/v2/models/{MODEL}/infer"
                wait_for(
                    lambda: http.get(f"{site.url}/v2/models/{MODEL}/ready").status_code == 200,
                    what="pump served at the site",
                )
                for rows in range(1, REQUESTS + 1):
                    answer = http.post(site.url + infer_url, json=_body(rows))
                    assert answer.status_code == 200, answer.text
                wait_for(
                    lambda: http.post(gateway.url + infer_url, json=_body(1)).status_code == 200,
                    what="the gateway routing to the site",
                )
                texts = {
                    "site": _get(http, f"{site.url}/metrics"),
                    "gateway": _get(http, f"{gateway.url}/metrics"),
                }
                hub_auth = {"Authorization": f"Bearer {viewer}"}

                def hub_has_recent_figures() -> bool:
                    texts["hub"] = _get(http, f"{hub.url}/metrics", hub_auth)
                    return "modelfleet_site_latency_seconds{" in texts["hub"]

                wait_for(hub_has_recent_figures, what="the site's telemetry on the hub's /metrics")
        exposed = Exposed()
        for source, text in texts.items():
            exposed.add(text, source)
        yield exposed
    finally:
        for process in reversed(processes):
            process.stop()


def _get(http: httpx.Client, url: str, headers: dict[str, str] | None = None) -> str:
    answer = http.get(url, headers=headers)
    assert answer.status_code == 200, f"{url}: {answer.status_code} {answer.text}"
    return answer.text


# --------------------------------------------------------------------------- the tests


def test_there_are_dashboards() -> None:
    assert DASHBOARDS, "no dashboard JSON under docs/grafana/"
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids), f"dashboard uids collide: {uids}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_a_grafana_model_on_the_datasource_variable(path: Path) -> None:
    doc = load(path)
    for key in ("title", "uid", "panels", "templating", "schemaVersion", "time"):
        assert key in doc, f"{path.name}: no {key!r}"
    assert isinstance(doc["schemaVersion"], int)
    assert doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    source = variables.get("datasource")
    assert source is not None, f"{path.name}: no $datasource variable"
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == wanted, f"${variable['name']}: {variable}"
            assert variable_query(variable), f"${variable['name']} has no query"
    panels = list(all_panels(doc))
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), f"{path.name}: panel ids repeat: {sorted(ids)}"
    assert any(p["type"] == "row" for p in panels), f"{path.name}: no rows"
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["id"]
        if panel["type"] == "row":
            continue
        assert panel.get("title"), f"panel {panel['id']} has no title"
        assert panel.get("description"), f"panel {panel['id']} has no description"
        assert panel["datasource"] == wanted, f"panel {panel['id']}: {panel['datasource']}"
        targets = panel.get("targets")
        assert targets, f"panel {panel['id']} has no targets"
        refs = [t["refId"] for t in targets]
        assert len(set(refs)) == len(refs), f"panel {panel['id']}: refIds repeat"
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {panel['id']} {target['refId']}"
            assert target["datasource"] == wanted, f"panel {panel['id']} {target['refId']}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_expression_reads(path: Path) -> None:
    """Static: the tokenizer understands every expression, and each names a metric."""
    for where, expr in expressions(load(path)):
        assert expr.selectors, f"{path.name} {where}: no metric"


def test_the_tokenizer_tells_metrics_from_labels_functions_and_keywords() -> None:
    expr = references(
        'histogram_quantile(0.99, sum by (le, site) (rate(a_bucket{site=~"$site", model!=""}'
        "[$__rate_interval]))) / on (site) group_left sum(b_total offset 5m) by (site, x)"
        " > bool 0 and c"
    )
    assert [(s.metric, s.labels) for s in expr.selectors] == [
        ("a_bucket", {"site", "model"}),
        ("b_total", set()),
        ("c", set()),
    ]
    assert [labels for labels, _, _ in expr.needs] == [{"le", "site"}, {"site"}, {"site", "x"}]
    # The by (le, site) list covers only the aggregated selector.
    (_, start, end), _, (_, start3, end3) = expr.needs
    assert start <= expr.selectors[0].position <= end < expr.selectors[1].position
    assert start3 <= expr.selectors[1].position <= end3 < expr.selectors[2].position
    for bad in ('{__name__="x"}', "rates(x[5m])", "sum by site (x)", 'x{a="1" b="2"}', "x)"):
        with pytest.raises(PromQLError):
            references(bad)
    found = variable_references('label_values(m{site=~"$site"}, model)')
    assert found.selectors[0].metric == "m"
    assert found.needs[0][0] == {"model"}


def test_the_readme_scrape_config_uses_the_fleet_ca_and_a_token_file() -> None:
    jobs = scrape_config()
    assert set(JOBS.values()) <= set(jobs), sorted(jobs)
    for name in JOBS.values():
        job = jobs[name]
        assert job["scheme"] == "https", name
        assert job["metrics_path"] == "/metrics", name
        assert "credentials_file" in job["authorization"], name
        assert "ca_file" in job["tls_config"], name
    assert attached_labels()["site"] >= {"site"}, "the sites' job must label each target"
    assert "site" not in attached_labels()["hub"], "the hub's series carry site themselves"


def test_every_series_and_label_the_dashboards_name_is_exposed(scraped: Exposed) -> None:
    attached = attached_labels()
    found = [
        f"{p.name} {line}" for p in DASHBOARDS for line in problems(load(p), scraped, attached)
    ]
    assert not found, (
        "\n".join(found)
        + "\n\nexposed:\n"
        + "\n".join(f"  {name} {sorted(labels)}" for name, labels in sorted(scraped.labels.items()))
    )


def test_a_name_or_label_that_is_not_exposed_is_found(scraped: Exposed) -> None:
    """The check has teeth: a misspelt series, a missing label in a matcher and in a
    grouping are each reported (against the same scrape)."""
    doc = load(DASHBOARDS[0])
    panel = next(p for p in all_panels(doc) if p["type"] != "row")
    panel["targets"] = [
        {"refId": "A", "expr": "rate(modelfleet_site_inference_request_total[5m])"},
        {"refId": "B", "expr": 'modelfleet_hub_requests_total{colour="red"}'},
        {"refId": "C", "expr": "sum by (colour) (modelfleet_hub_model_pushes_total)"},
    ]
    found = problems(doc, scraped, attached_labels())
    assert len(found) == 3, found
    assert "no series 'modelfleet_site_inference_request_total'" in found[0]
    assert all("colour" in line for line in found[1:]), found
