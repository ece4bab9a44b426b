"""docs/configuration.md, rendered from the one settings tree so it cannot drift."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings

from infra.settings import Settings
from infra.settings.naming import env_name, leaf_fields, sections

CONFIG_DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

TITLES = {
    None: "Core (broker, database, embedded runtime)",
    "guard": "Guards and reconciliation tolerances (streams)",
    "worker": "Streams worker",
    "mt5": "MT5 terminals (poller and executor in production)",
    "api": "REST API and dashboard",
    "telegram": "Telegram alerts",
}


def documented_names() -> list[str]:
    """Every environment variable the settings read, in the order of the reference."""
    return [env_name(section, field) for _, section in sections(Settings) for field in leaf_fields(section)]


def render() -> str:
    lines = ["# Configuration reference", "",
             "Every setting is an environment variable, read once at start into one settings object",
             "(`infra.settings.Settings`, a section per part of the system). This page is generated from",
             "it (`reconguard docs`); a test fails when it is stale. A value outside its range stops the",
             "process at start with a message naming the variable.", ""]
    for attribute, section in sections(Settings):
        lines += _section(attribute, section)
    return "\n".join(lines)


def _section(attribute: str | None, section: type[BaseSettings]) -> list[str]:
    where = "settings" if attribute is None else f"settings.{attribute}"
    lines = [f"## {TITLES.get(attribute, attribute)}", "", f"`{where}` (`{section.__module__}.{section.__name__}`)",
             "", "| variable | default | meaning |", "|---|---|---|"]
    for name in leaf_fields(section):
        field = section.model_fields[name]
        default = "(none)" if field.default is None else f"`{field.default}`"
        if field.default_factory is not None:
            default = "(computed)"
        lines.append(f"| `{env_name(section, name)}` | {default} | {field.description or ''} |")
    return lines + [""]


def write() -> Path:
    CONFIG_DOC.write_text(render())
    return CONFIG_DOC
