"""Run the pack's validate functions on resources, the way the pulumi-policy analyzer calls them.

The args are pulumi-policy's own ResourceValidationArgs / StackValidationArgs / PolicyResource,
built from a resource's type, inputs (wire names), options and URN; `report_violation` records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from policy.rules import CONTAINER, RULES, STACK_RULES, initial_config


def urn(name: str, resource_type: str = CONTAINER, parents: Sequence[str] = ("berth:stack:Stack",),
        stack: str = "prod") -> str:
    return f"urn:pulumi:{stack}::berth::{'$'.join((*parents, resource_type))}::{name}"


def options(protect: bool = False) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def resource_args(props: Mapping[str, Any], name: str = "app-0", resource_type: str = CONTAINER,
                  parents: Sequence[str] = ("berth:stack:Stack", "berth:app:AppService"), protect: bool = False,
                  config: Mapping[str, Any] | None = None) -> ResourceValidationArgs:
    return ResourceValidationArgs(resource_type, dict(props), urn(name, resource_type, parents), name,
                                  options(protect), None, dict(config or {}))


def violations(validate: Callable[..., None], args: Any) -> list[str]:
    found: list[str] = []
    validate(args, lambda message, urn=None: found.append(message))
    return found


def stack_args(resources: Sequence[PolicyResource], config: Mapping[str, Any] | None = None) -> StackValidationArgs:
    return StackValidationArgs(list(resources), dict(config or {}))


def policy_resource(props: Mapping[str, Any], name: str, resource_type: str = CONTAINER,
                    parents: Sequence[str] = ("berth:stack:Stack",), protect: bool = False) -> PolicyResource:
    return PolicyResource(resource_type, dict(props), urn(name, resource_type, parents), name, options(protect),
                          None, None, [], {})


def synth_violations(result: dict[str, Any], environment: str) -> dict[str, list[str]]:
    """Every rule run over a synth result, with the pack's config for `environment`: rule -> messages."""
    records = {record["name"]: record for record in result["resources"]}
    assert len(records) == len(result["resources"]), "resource names repeat: URNs would be ambiguous"

    def chain(record: dict[str, Any]) -> list[str]:
        parents: list[str] = []
        parent = record["parent"]
        while parent in records:
            parents.insert(0, records[parent]["type"])
            parent = records[parent]["parent"]
        return parents

    resources = [PolicyResource(r["type"], r["inputs"], urn(r["name"], r["type"], chain(r), result["stack"]),
                                r["name"], options(r["options"]["protect"]), None, None, [], {})
                 for r in result["resources"]]
    config = initial_config(environment)
    found: dict[str, list[str]] = {}
    for name, (validate, _schema) in RULES.items():
        messages: list[str] = []
        report = messages.append
        if name in STACK_RULES:
            validate(stack_args(resources, config.get(name, {})), lambda message, urn=None, add=report: add(message))
        else:
            for r in resources:
                args = ResourceValidationArgs(r.resource_type, r.props, r.urn, r.name, r.opts, None,
                                              config.get(name, {}))
                validate(args, lambda message, urn=None, add=report: add(message))
        if messages:
            found[name] = messages
    return found
