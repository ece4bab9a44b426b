"""Environment variable names of the settings tree, derived in one place.

A field is read from its ``validation_alias`` (the first choice is the documented name) or from its
section's ``env_prefix`` and its own name. The configuration reference, the environment handed
to child processes and the start-up error messages all use ``env_name``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import AliasChoices, BaseModel, SecretStr, ValidationError
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings


def env_name(section: type[BaseSettings], field: str) -> str:
    alias = section.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{section.model_config.get('env_prefix', '')}{field}".upper()


def sections(root: type[BaseSettings]) -> Iterator[tuple[str | None, type[BaseSettings]]]:
    """The root (name None) and each nested section, by attribute name."""
    yield None, root
    for name, field in root.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            yield name, kind


def leaf_fields(section: type[BaseSettings]) -> Iterator[str]:
    """The fields of a section that are settings themselves (not nested sections)."""
    for name, field in section.model_fields.items():
        kind = field.annotation
        if not (isinstance(kind, type) and issubclass(kind, BaseSettings)):
            yield name


def environment(settings: BaseSettings) -> dict[str, str]:
    """The environment variables that recreate ``settings`` in a child process (unset values omitted)."""
    env: dict[str, str] = {}
    for attribute, section in sections(type(settings)):
        values = settings if attribute is None else getattr(settings, attribute)
        for name in leaf_fields(section):
            value = getattr(values, name)
            if value is not None:
                env[env_name(section, name)] = _text(value)
    return env


def _text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=to_jsonable_python)  # models inside (guard profiles) too
    return str(value)


def explain(error: ValidationError, section: type[BaseSettings]) -> str:
    """A start-up error naming the environment variables at fault, one line each."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        name = env_name(section, field) if field in section.model_fields else field or section.__name__
        lines.append(f"{name}: {item['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
