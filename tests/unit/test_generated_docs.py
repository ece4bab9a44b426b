"""Generated documentation stays in step with the code."""

from __future__ import annotations

from reconguard import configdoc
from reconguard.settings import Settings


def test_configuration_reference_is_current():
    assert configdoc.CONFIG_DOC.read_text() == configdoc.render(), "run `make docs` and commit docs/"


def test_every_core_setting_is_documented_with_its_variable():
    text = configdoc.CONFIG_DOC.read_text()
    for name in Settings.model_fields:
        assert f"`{configdoc._env_name(Settings, name)}`" in text
    assert "`KAFKA_BOOTSTRAP_SERVERS`" in text and "`DATABASE_URL`" in text and "`TANSU_BIN`" in text
