"""Every setting in one pydantic-settings tree, loaded once at start and passed down.

``Settings`` holds the core (broker, database, embedded runtime) and one section per part of the
system: ``guard``, ``worker``, ``mt5``, ``api``, ``telegram``. Each field is read from one
documented environment variable (``naming.env_name``); `docs/configuration.md` is generated from
this tree and a test keeps it in step. Unsafe values are refused at start (``load``).
"""

from infra.settings.core import ConfigurationError, Settings, load
from infra.settings.guard import DEFAULT_LEVELS, AccountLevels, GuardProfile, GuardSettings, ProfileFamily, SymbolRules
from infra.settings.naming import env_name, environment, explain
from infra.settings.services import (
    ApiSettings,
    GatewaySettings,
    SupervisorSettings,
    TelegramSettings,
    WorkerSettings,
)

__all__ = [
    "DEFAULT_LEVELS", "AccountLevels", "ApiSettings", "ConfigurationError", "GatewaySettings", "GuardSettings", "Settings",
    "SupervisorSettings", "SymbolRules", "TelegramSettings", "WorkerSettings", "env_name", "environment", "explain", "load",
    "GuardProfile", "ProfileFamily",
]
