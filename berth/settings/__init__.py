"""Settings: the validated, frozen picture of one stack. Only this package reads configuration."""

from berth.settings.apps import AppSettings, Healthcheck, JobSettings
from berth.settings.base import Cadence, Resources
from berth.settings.loader import (
    RawConfig,
    deep_merge,
    from_pulumi_config,
    from_stack_files,
    insecure_warnings,
    load_settings,
)
from berth.settings.proxy import ProxySettings, Route, Site
from berth.settings.root import CONSOLES, SERVICE_NAMES, Settings

__all__ = [
    "CONSOLES", "SERVICE_NAMES", "AppSettings", "Cadence", "Healthcheck", "JobSettings", "ProxySettings",
    "RawConfig", "Resources", "Route", "Settings", "Site", "deep_merge", "from_pulumi_config", "from_stack_files",
    "insecure_warnings", "load_settings",
]
