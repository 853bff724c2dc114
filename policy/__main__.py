"""The policy pack: berth's rules, mandatory in prod and staging, advisory in dev.

The stack's environment comes from its own config (`berth:environment`), which the Pulumi CLI hands
every policy pack it runs (PULUMI_CONFIG, like PULUMI_STACK).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pulumi_policy import PolicyPack  # noqa: E402
from rules import POLICIES, enforcement_for, initial_config, stack_environment  # noqa: E402

environment = stack_environment(os.environ)
PolicyPack(
    name="berth",
    policies=POLICIES,
    enforcement_level=enforcement_for(environment),
    initial_config=initial_config(environment),
)
