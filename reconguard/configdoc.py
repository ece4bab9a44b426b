"""docs/configuration.md, rendered from the settings classes themselves so it cannot drift."""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

CONFIG_DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

#: Every settings class, by area. Each reads its own environment variables.
SETTINGS_CLASSES = [
    ("Core (broker, database, embedded runtime)", "reconguard.settings:Settings"),
    ("Guards and reconciliation tolerances (streams)", "streams.config:GuardConfig"),
    ("Streams worker", "streams.config:WorkerConfig"),
    ("MT5 terminals (poller and executor in production)", "producers.accounts:GatewaySettings"),
    ("REST API and dashboard", "reconguard.api.settings:ApiSettings"),
    ("Telegram alerts", "reconguard.telegram.settings:TelegramSettings"),
]


def _load(target: str) -> type[BaseSettings] | None:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _env_name(cls: type[BaseSettings], field: str) -> str:
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def render() -> str:
    lines = ["# Configuration reference", "",
             "Every setting is an environment variable. This page is generated from the settings classes",
             "(`reconguard docs`); a test fails when it is stale.", ""]
    for title, target in SETTINGS_CLASSES:
        cls = _load(target)
        if cls is None:
            continue
        lines += [f"## {title}", "", f"`{target}`", "", "| variable | default | meaning |", "|---|---|---|"]
        for name, field in cls.model_fields.items():
            default = "(none)" if field.default is None else f"`{field.default}`"
            if field.default_factory is not None:
                default = "(computed)"
            lines.append(f"| `{_env_name(cls, name)}` | {default} | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines)


def write() -> Path:
    CONFIG_DOC.write_text(render())
    return CONFIG_DOC
