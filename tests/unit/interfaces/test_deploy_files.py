"""deploy/: the compose file, the Kubernetes manifests and the Prometheus configuration hold together."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
DEPLOY = REPO_ROOT / "deploy"
SERVICES = {"api", "poller", "worker", "executor", "projector", "telegram", "archiver"}
PROMTOOL = shutil.which("promtool")


def _kubernetes() -> list[dict]:
    return [
        doc
        for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_compose_runs_each_service_in_its_own_container_on_kafka_and_postgres():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    commands = {name: spec.get("command") for name, spec in compose.items()}
    assert {name for name, command in commands.items() if command and command[0] in SERVICES} == SERVICES
    assert all(commands[name] == [name] for name in SERVICES)
    assert compose["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller", (
        "KRaft, no ZooKeeper"
    )
    for name in SERVICES:
        env = compose[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092" and env["DATABASE_URL"].startswith(
            "postgresql://"
        )
        assert compose[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_every_service_has_a_deployment_reading_the_secret():
    deployments = {d["metadata"]["name"]: d for d in _kubernetes() if d["kind"] == "Deployment"}
    assert set(deployments) == {f"reconguard-{s}" for s in SERVICES}
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [name.removeprefix("reconguard-")]
        sources = [s for source in container["envFrom"] for s in source]
        assert {"secretRef", "configMapRef"} <= set(sources), name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_no_real_secret_is_committed():
    secrets = [d for d in _kubernetes() if d["kind"] == "Secret"]
    assert all(
        "change-me" in d["stringData"]["DATABASE_URL"] and not d["stringData"]["TELEGRAM_BOT_TOKEN"]
        for d in secrets
    )


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`)")
def test_prometheus_configuration_passes_promtool(tmp_path):
    # The scrape token is mounted at /etc/prometheus/metrics-token in a deployment; here, a file of ours.
    token = tmp_path / "metrics-token"
    token.write_text("a-metrics-token-of-at-least-24-chars\n")
    config = tmp_path / "prometheus.yml"
    config.write_text((DEPLOY / "prometheus" / "prometheus.yml").read_text().replace(
        "/etc/prometheus/metrics-token", str(token)))
    done = subprocess.run(
        [PROMTOOL, "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_the_api():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]
    }
    assert "api:8000" in targets


def test_every_deployment_restarts_its_process_and_probes_liveness_where_it_listens():
    deployments = {d["metadata"]["name"]: d for d in _kubernetes() if d["kind"] == "Deployment"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Always", name
        (container,) = pod["containers"]
        if container.get("ports"):
            assert "livenessProbe" in container, f"{name} listens but has no liveness probe"
    api = deployments["reconguard-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert all(compose[name].get("restart") == "unless-stopped" for name in SERVICES)
