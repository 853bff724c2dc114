"""berth's policy rules, as pulumi-policy validate functions over the resources' inputs (wire names).

Each rule is one `validate(args, report_violation)`; the PolicyPack is built from POLICIES in
`policy/__main__.py` only. Rules that differ by environment read it from their policy config
(`environment`, set by initial_config() from the stack's `berth:environment`). What the pack cannot
see, it does not pretend to check:

- `retain_on_delete` is not in the analyzer protocol (pulumi-policy's PolicyResourceOptions has
  protect, ignore_changes, delete_before_replace, aliases, custom_timeouts, additional_secret_outputs
  and parent only): berth retains every data volume in `components/common.py:data_volume`, and
  tests/components proves it for every blueprint and stack;
- whether a value is a secret: policy packs receive secrets in plain text with no mark
  (pulumi/pulumi-policy#241), so "credentials are secrets" is checked where berth makes them: only
  `secrets:` references reach an env as generated values, and tests/components proves none leaks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
PROXY_COMPONENT = "berth:proxy:NginxProxy"
ACME_COMPONENT = "berth:acme:Certbot"
DATA_COMPONENT_PREFIX = "berth:data:"
# Environments where the pack blocks an update; anywhere else (dev) it only reports.
MANDATORY_IN = ("prod", "staging")
# Ports of data services and their consoles: published, only ever on loopback.
DATA_PORTS = frozenset({5432, 6379, 5672, 15672, 9000, 9001, 9200, 9300, 5601, 5044, 9600, 12201})
LOOPBACK = "127.0.0.1"
RESTART_POLICIES = ("always", "unless-stopped", "on-failure")
DOCKER_SOCKET = re.compile(r"(^|/)docker\.sock$")
# An env name that holds a credential, and values no generated credential ever is.
CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL",
                             re.IGNORECASE)
WEAK_VALUES = frozenset({"password", "changeme", "change-me", "secret", "admin", "root", "postgres", "guest",
                         "minioadmin", "test", "example", "default", "123456", "letmein", "pass"})
# Shorter than berth's shortest generated secret (16): typed by a person, not generated.
MIN_CREDENTIAL_LENGTH = 16
URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]*:([^@\s]*)@", re.IGNORECASE)
_ENVIRONMENT_SCHEMA = PolicyConfigSchema(properties={"environment": {"type": "string"}})


# -- which container is which (from the URN's type chain) ----------------------------------------


def parent_types(urn: str) -> list[str]:
    """The component types a resource sits under: `...::berth:stack:Stack$berth:proxy:NginxProxy$docker:...::n`."""
    parts = urn.split("::")
    return parts[2].split("$")[:-1] if len(parts) >= 4 else []


def is_proxy(args: ResourceValidationArgs) -> bool:
    """nginx: a container right under berth's proxy component (not the certbot beside it)."""
    return parent_types(args.urn)[-1:] == [PROXY_COMPONENT]


def is_data_service(args: ResourceValidationArgs) -> bool:
    """A container of one of berth's data service components."""
    return any(kind.startswith(DATA_COMPONENT_PREFIX) for kind in parent_types(args.urn))


def is_one_shot(props: Mapping[str, Any]) -> bool:
    """A job or setup container: `pulumi up` waits for it to exit; docker never restarts it."""
    return bool(props.get("attach")) or props.get("mustRun") is False


def environment_of(args: ResourceValidationArgs | StackValidationArgs) -> str:
    """The stack's environment from the policy's config; the strictest (prod) if it was not given."""
    return str(args.get_config().get("environment") or "prod")


def _containers(args: ResourceValidationArgs) -> bool:
    return args.resource_type == CONTAINER


# -- the rules ------------------------------------------------------------------------------------


def only_proxy_publishes_ports(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """No container other than the proxy publishes a port."""
    if _containers(args) and args.props.get("ports") and not is_proxy(args):
        published = ", ".join(f"{p.get('ip', '0.0.0.0')}:{p.get('external')}" for p in args.props["ports"])
        report(f"{args.name} publishes {published}: only the proxy may publish ports; reach it through the proxy "
               "or on the stack's networks")


def data_ports_on_loopback(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """No data service port is published on anything but 127.0.0.1."""
    if not _containers(args):
        return
    data = is_data_service(args)
    for port in args.props.get("ports") or []:
        if (data or port.get("internal") in DATA_PORTS) and port.get("ip", "0.0.0.0") != LOOPBACK:
            report(f"{args.name} publishes data port {port.get('internal')} on {port.get('ip', '0.0.0.0')}: "
                   f"a data service port is published on {LOOPBACK} only")


def long_running_hardened(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Every long-running container has a healthcheck, a memory limit and a restart policy."""
    if not _containers(args) or is_one_shot(args.props):
        return
    props = args.props
    missing = [what for what, ok in (
        ("a healthcheck", bool((props.get("healthcheck") or {}).get("tests"))),
        ("a memory limit", bool(props.get("memory"))),
        (f"a restart policy ({', '.join(RESTART_POLICIES)})", props.get("restart") in RESTART_POLICIES),
    ) if not ok]
    if missing:
        report(f"{args.name} is long-running without {', '.join(missing)}")


def data_volumes_protected(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Data volumes are protected in prod (retained everywhere: see the module docstring)."""
    if args.resource_type == VOLUME and environment_of(args) == "prod" and not args.opts.protect:
        report(f"volume {args.props.get('name', args.name)} is not protected in prod: set berth:protect_data: true")


def no_plaintext_credentials(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """No env value looks like a credential typed in plain: a known default, or too short to be generated."""
    if not _containers(args):
        return
    for line in args.props.get("envs") or []:
        name, _, value = str(line).partition("=")
        match = URL_PASSWORD.match(value)
        credential = match.group(1) if match else value if CREDENTIAL_NAME.search(name) else None
        if credential is not None and _looks_typed(credential):
            report(f"{args.name}: env {name} holds what looks like a plaintext credential; take it from a "
                   "generated secret (secrets: {ENV: secrets.<name>}) or give it as a Pulumi secret")


def _looks_typed(credential: str) -> bool:
    return bool(credential) and (credential.lower() in WEAK_VALUES or len(credential) < MIN_CREDENTIAL_LENGTH)


def tls_outside_dev(args: StackValidationArgs, report: ReportViolation) -> None:
    """TLS is on outside dev, and is not self-signed in prod."""
    environment = environment_of(args)
    if environment == "dev":
        return
    # With ACME, the self-signed certificate is only what nginx starts on before the first order.
    acme = any(ACME_COMPONENT in parent_types(resource.urn) for resource in args.resources)
    for resource in args.resources:
        if resource.resource_type == CONTAINER and parent_types(resource.urn)[-1:] == [PROXY_COMPONENT]:
            internal = {port.get("internal") for port in resource.props.get("ports") or []}
            if 443 not in internal:
                report(f"{resource.name}: the proxy serves no TLS (port 443) in {environment}", resource.urn)
        if resource.resource_type == SELF_SIGNED_CERT and environment == "prod" and not acme:
            report(f"{resource.name}: a self-signed certificate in prod; browsers refuse it, use a CA-issued one",
                   resource.urn)


def privileged_or_socket(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """No container runs privileged or mounts the Docker socket, unless the policy config allows it, with a reason."""
    if not _containers(args):
        return
    allowed = args.get_config().get("allow") or {}
    reason = str(allowed.get(args.name) or "").strip()
    mounts = [m.get("hostPath") or m.get("source") or "" for m in
              (*(args.props.get("volumes") or []), *(args.props.get("mounts") or []))]
    found = (["runs privileged"] if args.props.get("privileged") else []) + [
        f"mounts the Docker socket ({path})" for path in mounts if DOCKER_SOCKET.search(str(path))]
    if found and not reason:
        report(f"{args.name} {' and '.join(found)}: that is root on the host; allow it only with a reason in "
               "this policy's config: allow: {<resource name>: <reason>}")


def images_pinned_in_prod(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Images are pinned by digest in prod."""
    if args.resource_type == REMOTE_IMAGE and environment_of(args) == "prod":
        name = str(args.props.get("name", ""))
        if "@sha256:" not in name:
            report(f"image {name} is not pinned by digest in prod: promote it (berth:promote_from) or give "
                   "repo@sha256:<digest>")


Validate = Callable[[Any, ReportViolation], None]
_ALLOW_SCHEMA = PolicyConfigSchema(properties={
    "allow": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}})

# name -> (validate, config schema); tls_outside_dev looks at the whole stack, the others at one resource.
RULES: dict[str, tuple[Validate, PolicyConfigSchema | None]] = {
    "berth-only-proxy-publishes-ports": (only_proxy_publishes_ports, None),
    "berth-data-ports-on-loopback": (data_ports_on_loopback, None),
    "berth-long-running-hardened": (long_running_hardened, None),
    "berth-data-volumes-protected": (data_volumes_protected, _ENVIRONMENT_SCHEMA),
    "berth-no-plaintext-credentials": (no_plaintext_credentials, None),
    "berth-tls-outside-dev": (tls_outside_dev, _ENVIRONMENT_SCHEMA),
    "berth-no-privileged-or-docker-socket": (privileged_or_socket, _ALLOW_SCHEMA),
    "berth-images-pinned-in-prod": (images_pinned_in_prod, _ENVIRONMENT_SCHEMA),
}
STACK_RULES = frozenset({"berth-tls-outside-dev"})


def _policy(name: str, validate: Validate, schema: PolicyConfigSchema | None) -> Any:
    kind = StackValidationPolicy if name in STACK_RULES else ResourceValidationPolicy
    return kind(name=name, description=(validate.__doc__ or "").splitlines()[0], validate=validate,
                config_schema=schema)


POLICIES = [_policy(name, validate, schema) for name, (validate, schema) in RULES.items()]
# The rules whose verdict depends on the stack's environment (their config carries it).
ENVIRONMENT_RULES = tuple(name for name, (_, schema) in RULES.items() if schema is _ENVIRONMENT_SCHEMA)


def stack_environment(environ: Mapping[str, str]) -> str:
    """`berth:environment` from the stack config the CLI passes (PULUMI_CONFIG), else the stack's name."""
    import json

    try:
        config = json.loads(environ.get("PULUMI_CONFIG") or "{}")
    except ValueError:
        config = {}
    return str(config.get("berth:environment") or environ.get("PULUMI_STACK") or "prod")


def enforcement_for(environment: str) -> EnforcementLevel:
    """Mandatory (blocks the update) in prod and staging; advisory (reported only) in dev and elsewhere."""
    return EnforcementLevel.MANDATORY if environment in MANDATORY_IN else EnforcementLevel.ADVISORY


def initial_config(environment: str) -> dict[str, dict[str, str]]:
    """Tell the environment-dependent rules where they run."""
    return {name: {"environment": environment} for name in ENVIRONMENT_RULES}


def mandatory_names(environment: str, policies: Iterable[Any] = POLICIES) -> list[str]:
    """The rules that block an update in this environment."""
    return [p.name for p in policies] if enforcement_for(environment) is EnforcementLevel.MANDATORY else []
