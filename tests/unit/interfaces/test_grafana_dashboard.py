"""The Grafana dashboard queries only metrics that reconguard declares, and shows every SPEC metric."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

REPO_ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "reconguard-dashboard.json"
#: Where metrics are declared: infra.metrics, plus the interface modules until the lead moves
#: their metrics there (then these modules only re-export and the check still holds).
METRIC_MODULES = ("infra.metrics", "infra.metrics", "infra.metrics")
SPEC_METRICS = {
    "mt5_position_sync_total",
    "reconciliation_divergences_total",
    "drawdown_guard_triggers_total",
    "positions_autoclosed_total",
    "mt5_positions_total",
    "account_equity_gbp",
    "account_drawdown_percent",
    "reconciliation_latency_seconds_bucket",
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def declared_series() -> set[str]:
    """Every series name a scrape of the declared metrics can contain."""
    names: set[str] = set()
    for module in map(importlib.import_module, METRIC_MODULES):
        for collector in vars(module).values():
            if isinstance(collector, MetricWrapperBase):
                for family in collector.describe():
                    names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, keywords, labels, strings or durations)."""
    expr = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,[^)]*\)", r"\1", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = _GROUPING.sub("", expr)
    words = set(re.findall(r"\b([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr))
    return words - {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def queries(dashboard: dict) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        pytest.param(
            'sum by (reason) (increase(x_total{a="b"}[5m]))', {"x_total"}, id="grouping, matcher, range"
        ),
        pytest.param(
            "histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m])))", {"h_bucket"}, id="quantile"
        ),
        pytest.param(
            "label_values(account_equity_gbp, account)", {"account_equity_gbp"}, id="template variable"
        ),
        pytest.param('a{x=~"$account"} / on (account) b', {"a", "b"}, id="binary operation with on()"),
    ],
)
def test_metric_names_are_read_out_of_promql(expr, expected):
    assert metric_names(expr) == expected


def test_every_query_uses_declared_metrics_only():
    dashboard = json.loads(DASHBOARD.read_text())
    declared = declared_series()
    used = {name for expr in queries(dashboard) for name in metric_names(expr)}
    assert used, "no queries found: the parser or the file is wrong"
    assert used - declared == set(), f"queried but never declared: {sorted(used - declared)}"


def test_every_spec_metric_has_a_panel():
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in queries(dashboard) for name in metric_names(expr)}
    assert SPEC_METRICS - used == set()


def test_panels_do_not_overlap_and_have_unique_ids():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [
        (x, y)
        for p in panels
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
