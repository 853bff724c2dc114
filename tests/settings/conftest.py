"""Settings tests read Pulumi's runtime config as the program does; no stack name may leak in from another test."""

from __future__ import annotations

import pytest
from pulumi.runtime import settings as pulumi_settings


@pytest.fixture(autouse=True)
def no_stack_from_an_earlier_synth():
    """synth() sets the runtime's stack; from_pulumi_config() would read it as this test's stack."""
    saved = pulumi_settings.get_stack()
    pulumi_settings._set_stack(None)
    yield
    pulumi_settings._set_stack(saved)
