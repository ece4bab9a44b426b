"""Generated documentation stays in step with the code."""

from __future__ import annotations

from pathlib import Path

from reconguard import configdoc

#: The variable names documented before the settings became one tree (issue 9): deployments use them.
NAMES_BEFORE = Path(__file__).parent / "data" / "environment-variables-v1.txt"


def test_configuration_reference_is_current():
    assert configdoc.CONFIG_DOC.read_text() == configdoc.render(), "run `make docs` and commit docs/"


def test_every_variable_documented_before_is_still_read():
    before = set(NAMES_BEFORE.read_text().split())
    now = set(configdoc.documented_names())
    assert before - now == set(), "an environment variable was renamed or removed: deployments would break"


def test_every_variable_appears_once_in_the_reference():
    names = configdoc.documented_names()
    text = configdoc.CONFIG_DOC.read_text()
    assert len(names) == len(set(names))
    for name in names:
        assert f"`{name}`" in text
    assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "TANSU_BIN", "TELEGRAM_BOT_TOKEN"} <= set(names)
