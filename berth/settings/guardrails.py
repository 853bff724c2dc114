"""Prod and staging guardrails: insecure choices are refused unless the stack opts out, with a reason.

A stack opts out of one rule with ``allow_insecure: {<rule>: "<reason>"}``; every opt-out is then
printed as a warning on every preview and up (``insecure_warnings``), so it is never silent.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator

from berth.settings.base import matching

if TYPE_CHECKING:
    from berth.settings.root import Settings

GUARDED = ("prod", "staging")

INSECURE_RULES = {
    "tcp_without_tls": "a tcp:// Docker host without TLS (the Docker API, which is root on the host, in clear)",
    "ssh_without_host_key_check": "ssh to the Docker host without checking its host key",
    "tls_off": "the proxy without TLS (proxy.tls.mode: none)",
    "hsts_off": "the proxy without HSTS (proxy.tls.hsts_max_age: 0)",
    "unprotected_data": "data volumes that `pulumi destroy` may delete (protect_data: false)",
    "plaintext_secret": "a secret written in plain text in the stack file instead of `secure:`",
    "secret_in_env": "a credential in an app's plain env, where synth output and the state show it",
    "stack_environment_mismatch": "a stack whose environment is another stack's, so their docker names collide",
}
InsecureRule = Literal[
    "tcp_without_tls", "ssh_without_host_key_check", "tls_off", "hsts_off", "unprotected_data", "plaintext_secret",
    "secret_in_env", "stack_environment_mismatch",
]
Reason = Annotated[str, AfterValidator(matching(r"[ -~]{8,200}", "a reason of 8-200 printable ASCII characters"))]
AllowInsecure = dict[InsecureRule, Reason]

_NO_HOST_KEY_CHECK = re.compile(r"(stricthostkeychecking[ =]+(no|off)|userknownhostsfile[ =]+/dev/null)",
                                re.IGNORECASE | re.ASCII)
_CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL",
                              re.IGNORECASE | re.ASCII)
# scheme://user:password@host: a URL with a password in it.
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.IGNORECASE | re.ASCII)

Choice = tuple[str, str, str]  # (config path, rule text, the allow_insecure key that opts out)


def insecure_choices(settings: Settings, stack: str | None, plain_secrets: list[str] | None) -> list[Choice]:
    """Every insecure choice a prod or staging stack makes; empty for other environments.

    ``plain_secrets`` are the paths of secrets given in plain text in the stack's own config (None
    when the source is not a stack file or the engine, and so cannot say).
    """
    if settings.environment not in GUARDED and stack not in GUARDED:
        return []
    env = settings.environment
    found: list[Choice] = []

    def add(path: str, rule: str, opt_out: str) -> None:
        found.append((path, f"{rule} is refused in {env}; fix it, or set allow_insecure.{opt_out} to the "
                            "reason it is safe here", opt_out))

    if stack is not None and stack != env and {stack, env} & set(GUARDED):
        add("environment", f"environment {env!r} in stack {stack!r} (its docker names would be {env}'s)",
            "stack_environment_mismatch")
    host = settings.host
    if host.url.startswith("tcp://") and host.ca is None:
        add("host.url", "a tcp:// host without ca, cert and key (TLS)", "tcp_without_tls")
    if _NO_HOST_KEY_CHECK.search(" ".join(host.ssh_opts).replace("-o", " ")):
        add("host.ssh_opts", "an ssh option that skips the host key check", "ssh_without_host_key_check")
    proxy = settings.proxy
    if proxy is not None and proxy.enabled:
        if proxy.tls.mode == "none":
            add("proxy.tls.mode", "tls mode none", "tls_off")
        elif not proxy.tls.hsts_max_age:
            add("proxy.tls.hsts_max_age", "hsts_max_age 0", "hsts_off")
    if env == "prod" and not settings.protect_data:
        add("protect_data", "protect_data false", "unprotected_data")
    for path in plain_secrets or ():
        add(path, "a secret in plain text (write it with `pulumi config set --secret`)", "plaintext_secret")
    for kind, workloads in (("apps", settings.enabled_apps), ("jobs", settings.enabled_jobs)):
        for name, workload in workloads.items():
            for key, value in workload.env.items():
                if _CREDENTIAL_NAME.search(key) or _URL_WITH_PASSWORD.search(value):
                    add(f"{kind}.{name}.env.{key}", "a credential in plain env (move it to secrets)",
                        "secret_in_env")
    return found
