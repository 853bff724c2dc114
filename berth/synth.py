"""Offline synth: run the real program (__main__.py) under Pulumi's mock runtime and record every resource.

No Pulumi CLI, backend or Docker host is needed. What is recorded is what the engine would be sent:
each RegisterResource request's type, name, parent, provider, inputs and options. Secret inputs are
shown as "[secret]" unless `reveal` is asked for. pulumi-random and pulumi-tls answer with real
values (random passwords of the requested length, a real self-signed certificate), so the desired
state can be applied as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import runpy
import secrets
import string
import sys
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from berth import preflight as host_preflight
from berth.plan.containers import split_image
from berth.settings import RawConfig, deep_merge, from_stack_files, load_settings
from berth.settings.loader import PROJECT_ROOT
from berth.settings.release import plan_release, qualified, release_clock

SECRET = "[secret]"
STACK_REFERENCE = "pulumi:pulumi:StackReference"
# The organization of a self-managed backend (Pulumi's own default), in which StackReferences are named.
ORGANIZATION = "organization"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_SIG_KEY = "4dabf18193072939515e22adb298388d"


def synth(stack: str, blueprint: str | None = None, reveal: bool = False,
          raw_overrides: dict[str, Any] | None = None, preflight: bool = False,
          references: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The desired state of a stack: validated settings first (ConfigError before anything runs).

    ``raw_overrides`` is deep-merged over the stack file's config, as `pulumi config set` would be.
    The host preflight is skipped (synth is offline) unless ``preflight`` asks for it; a problem
    it finds raises pulumi.RunError, as in `pulumi preview`.
    ``references`` answers StackReferences: stack name (``staging`` or ``organization/berth/staging``)
    -> that stack's outputs, e.g. ``{"staging": {"release": ...}}``; any other stack has none.
    The release time is SOURCE_DATE_EPOCH if set, else 0, so that two synths diff cleanly.
    """
    files = from_stack_files(stack)
    raw = RawConfig(deep_merge(files, raw_overrides or {}), files.secure, stack)
    if blueprint:
        raw["blueprint"] = blueprint
    settings = load_settings(raw)
    own = f"{ORGANIZATION}/berth/{stack}"
    answers = {qualified(name, own): outputs for name, outputs in (references or {}).items()}
    fixed_clock = "SOURCE_DATE_EPOCH" not in os.environ
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    try:
        # Promotion and rollback refusals too are ConfigErrors before anything runs, as in the program.
        plan_release(settings, lambda name, output: answers.get(name, {}).get(output), own, release_clock())
        mocks = SynthMocks(answers)
        monitor = RecordingMonitor(mocks, reveal)
        # set_mocks keeps a root Stack made by an earlier synth in this process, with that stack's name
        # and outputs: each synth needs its own.
        pulumi.runtime.settings.ROOT.set(None)
        pulumi.runtime.set_mocks(mocks, project="berth", stack=stack, preview=False, monitor=monitor,
                                 logger=_logger(), organization=ORGANIZATION)
        # As the engine hands config to the program: every top-level value a string (objects as JSON),
        # and the keys that held a `secure:` value marked secret. __main__.py reads it back with
        # from_pulumi_config(), through the same reading as the stack file above; its warnings (the
        # stack's allow_insecure opt-outs) reach stderr through pulumi.log, as the CLI shows them.
        pulumi.runtime.set_all_config({f"berth:{key}": _encode(value) for key, value in raw.items()},
                                      [f"berth:{key}" for key in sorted(raw.secure)])
        with contextlib.nullcontext() if preflight else host_preflight.skipped():
            _sync_await(run_pulumi_func(_run_program))
    finally:
        if fixed_clock:
            del os.environ["SOURCE_DATE_EPOCH"]
    return {
        "stack": stack,
        "blueprint": settings.blueprint,
        # Registration order varies from run to run (it is async); sorted, two synths diff cleanly.
        "resources": sorted(monitor.records, key=lambda record: (record["type"], record["name"])),
        "outputs": _stack_outputs(reveal),
    }


def _logger() -> logging.Logger:
    """The program's pulumi.log lines (the preflight's engine line, warnings) on stderr, as the CLI shows them."""
    logger = logging.getLogger("berth.synth")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_CliFormat())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class _CliFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _run_program() -> None:
    """Berth's own __main__.py, as `pulumi up` runs it."""
    runpy.run_path(str(PROJECT_ROOT / "__main__.py"), run_name="__main__")


class SynthMocks(pulumi.runtime.Mocks):
    """Answers like the providers would: names, image IDs, exit codes, passwords and certificates.

    A RemoteImage's repo digest is the reference itself when it names a digest, else a made-up
    ``repo@sha256:<hash of the reference>``, stable from run to run. A StackReference answers with
    the outputs given for its stack, or none.
    """

    def __init__(self, references: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.references = references or {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        """Outputs for one resource, deterministic except for generated secrets."""
        state = dict(args.inputs)
        digest = hashlib.sha256(f"{args.typ}::{args.name}".encode()).hexdigest()
        if args.typ.startswith("docker:") and "name" not in state:
            state["name"] = f"{args.name}-{digest[:7]}"  # Pulumi's autonaming: name plus a random suffix
        if args.typ == STACK_REFERENCE:
            outputs = self.references.get(state["name"], {})
            return state["name"], {"name": state["name"], "outputs": outputs, "secretOutputNames": []}
        if args.typ == "docker:index/remoteImage:RemoteImage":
            state["imageId"] = state["name"]
            state["repoDigest"] = _repo_digest(state["name"])
        elif args.typ == "docker:index/container:Container":
            state["exitCode"] = 0
        elif args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = _password(int(state["length"]), bool(state.get("special", True)))
        elif args.typ.startswith("tls:"):
            state.update(_tls_outputs(args.typ, state))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        """No provider functions are called by berth."""
        return {}, None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A MockMonitor that keeps each RegisterResource request as a synth record."""

    def __init__(self, mocks: pulumi.runtime.Mocks, reveal: bool) -> None:
        super().__init__(mocks)
        self.records: list[dict[str, Any]] = []
        self.reveal = reveal

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method name
        """Record the request, then let the mock monitor answer it."""
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            property_deps = {urn for deps in request.propertyDependencies.values() for urn in deps.urns}
            self.records.append({
                "type": request.type,
                "name": request.name,
                "parent": _urn_name(request.parent),
                "provider": _urn_name(request.provider.rsplit("::", 1)[0]),
                "inputs": _plain(json_format.MessageToDict(request.object), self.reveal),
                "options": {
                    "protect": bool(request.protect),
                    "retain_on_delete": bool(request.retainOnDelete),
                    "delete_before_replace": bool(request.deleteBeforeReplace),
                    "depends_on": sorted(_urn_name(urn) for urn in request.dependencies if urn not in property_deps),
                    "dependencies": sorted(_urn_name(urn) for urn in request.dependencies),
                    "custom_timeouts": {k: v for k, v in (("create", request.customTimeouts.create),
                                                          ("update", request.customTimeouts.update),
                                                          ("delete", request.customTimeouts.delete)) if v},
                    "ignore_changes": list(request.ignoreChanges),
                    "additional_secret_outputs": sorted(request.additionalSecretOutputs),
                },
            })
        return response


def _repo_digest(ref: str) -> str:
    if "@sha256:" in ref:
        return ref
    repository = split_image(ref)[0]
    return f"{repository}@sha256:{hashlib.sha256(ref.encode()).hexdigest()}"


def _tls_outputs(typ: str, inputs: dict[str, Any]) -> dict[str, str]:
    from berth import tlsmock  # cryptography costs ~30 ms to import; only stacks with TLS need it

    if typ == "tls:index/privateKey:PrivateKey":
        return tlsmock.private_key(inputs.get("algorithm", "ECDSA"), inputs.get("ecdsaCurve", "P256"))
    if typ == "tls:index/selfSignedCert:SelfSignedCert":
        return {"certPem": tlsmock.self_signed_cert(inputs)}
    return {}


def _urn_name(urn: str) -> str | None:
    return urn.rsplit("::", 1)[-1] if urn else None


def _plain(value: Any, reveal: bool) -> Any:
    """Protobuf JSON -> plain values; secrets masked, resource references reduced to their names."""
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            return _plain(value.get("value"), reveal) if reveal else SECRET
        if value.get(_SIG_KEY) == _RESOURCE_SIG:
            return {"resource": _urn_name(value.get("urn", ""))}
        return {key: _plain(item, reveal) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item, reveal) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _stack_outputs(reveal: bool) -> dict[str, Any]:
    root = pulumi.runtime.settings.get_root_resource()
    outputs: dict[str, Any] = {}
    for key, value in sorted(getattr(root, "outputs", {}).items()):
        output = pulumi.Output.from_input(value)
        is_secret = _sync_await(output.is_secret())
        outputs[key] = SECRET if is_secret and not reveal else _sync_await(output.future())
    return outputs


def _password(length: int, special: bool) -> str:
    alphabet = string.ascii_letters + string.digits + ("!#$%&*()-_=+[]{}<>:?" if special else "")
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render_tree(result: dict[str, Any]) -> str:
    """An indented view: each resource under its parent, with the options that matter for data."""
    names = {record["name"] for record in result["resources"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for record in result["resources"]:
        children.setdefault(record["parent"] if record["parent"] in names else None, []).append(record)
    lines = [f"stack {result['stack']} (blueprint: {result['blueprint'] or '-'})"]

    def walk(parent: str | None, depth: int) -> None:
        for record in children.get(parent, []):
            flags = [flag for flag, on in (("protect", record["options"]["protect"]),
                                           ("retain", record["options"]["retain_on_delete"]),
                                           ("delete-before-replace", record["options"]["delete_before_replace"]))
                     if on]
            image = record["inputs"].get("image") if record["type"].endswith("Container") else None
            detail = "".join((f" image={image}" if image else "", f" [{', '.join(flags)}]" if flags else ""))
            lines.append(f"{'  ' * depth}{record['type']} {record['name']}{detail}")
            walk(record["name"], depth + 1)

    walk(None, 1)
    lines.append("outputs:")
    lines += [f"  {key}: {json.dumps(value)}" for key, value in result["outputs"].items()]
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: Path | None = None) -> str:
    """The JSON document, stable key order."""
    text = json.dumps(result, indent=2, sort_keys=False)
    if path is not None:
        path.write_text(text + "\n")
    return text
