"""The command line: `python -m berth synth` prints the desired state, or one `berth:` line and exit 2."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from berth.errors import ConfigError
from berth.synth import SECRET, render_tree, synth

ROOT = Path(__file__).resolve().parents[2]
RECORD_KEYS = ["type", "name", "parent", "provider", "inputs", "options"]
OPTION_KEYS = {"protect", "retain_on_delete", "delete_before_replace", "depends_on", "dependencies",
               "custom_timeouts", "ignore_changes", "additional_secret_outputs"}


def berth(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "berth", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def dev_json() -> subprocess.CompletedProcess[str]:
    return berth("synth", "--stack", "dev", "--format", "json")


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The program and its stack files in a temp dir, where a test may add a broken stack file."""
    root = tmp_path_factory.mktemp("project")
    for folder in ("berth", "components", "blueprints"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (ROOT / "__main__.py", *ROOT.glob("Pulumi*.yaml")):
        shutil.copy(path, root / path.name)
    (root / "Pulumi.broken.yaml").write_text(
        "config:\n  berth:environment: broken\n  berth:blueprint: praxifi\n"
        "  berth:apps:\n    backend:\n      port: 70000\n")
    (root / "Pulumi.twice.yaml").write_text(
        "config:\n  berth:environment: twice\n  berth:blueprint: praxifi\n  berth:domain: Not A Domain\n"
        "  berth:apps:\n    backend:\n      port: 0\n")
    return root


def skipped_preflight(url: str) -> str:
    return f"berth: synth skips the host preflight ({url} is not contacted); --preflight runs it\n"


def test_json_has_the_documented_shape(dev_json):
    assert (dev_json.returncode, dev_json.stderr) == (0, skipped_preflight("unix:///var/run/docker.sock"))
    result = json.loads(dev_json.stdout)
    assert list(result) == ["stack", "blueprint", "resources", "outputs"]
    assert (result["stack"], result["blueprint"]) == ("dev", "demo")
    assert len(result["resources"]) >= 10
    for record in result["resources"]:
        assert list(record) == RECORD_KEYS
        assert set(record["options"]) == OPTION_KEYS
        assert isinstance(record["inputs"], dict)
    assert result["outputs"]["connections"] == SECRET
    assert result["outputs"]["environment"] == "dev"
    assert result["outputs"]["urls"] == ["https://localhost:8443"]


def test_json_matches_the_library_synth(dev_json):
    printed = json.loads(dev_json.stdout)
    direct = synth("dev")
    # Autonamed containers get a hash suffix and certificates are made fresh, so compare the structure.
    assert sorted((r["type"], r["name"], r["parent"]) for r in printed["resources"]) == sorted(
        (r["type"], r["name"], r["parent"]) for r in direct["resources"])
    assert printed["outputs"] == direct["outputs"]


def test_tree_is_indented_by_parent():
    run = berth("synth", "--stack", "prod", "--format", "tree")
    assert (run.returncode, run.stderr) == (0, skipped_preflight("ssh://deploy@prod.example.com:22"))
    lines = run.stdout.splitlines()
    assert lines[0] == "stack prod (blueprint: praxifi)"
    assert lines[1] == "  berth:stack:Stack praxifi-prod"
    assert "    berth:host:DockerHost host" in lines
    assert "      pulumi:providers:docker host-docker" in lines
    assert "      docker:index/volume:Volume redis-data [protect, retain]" in lines
    assert ("      docker:index/container:Container redis-container image=redis:7-alpine [delete-before-replace]"
            in lines)
    assert "      docker:index/container:Container backend-0 image=ghcr.io/praxifi/aiml-engine:latest" in lines
    outputs = lines.index("outputs:")
    assert '  connections: "[secret]"' in lines[outputs:]
    for line in lines[1:outputs]:
        assert re.fullmatch(r"(  )+\S+ \S+.*", line), line
    depths = [(len(line) - len(line.lstrip())) // 2 for line in lines[1:outputs]]
    assert all(b <= a + 1 for a, b in zip(depths, depths[1:], strict=False))


def test_tree_of_the_library_result():
    result = {"stack": "s", "blueprint": None, "outputs": {"x": 1}, "resources": [
        {"type": "berth:a:A", "name": "a", "parent": "root", "inputs": {},
         "options": {"protect": False, "retain_on_delete": False, "delete_before_replace": False}},
        {"type": "docker:index/container:Container", "name": "c", "parent": "a", "inputs": {"image": "x:1"},
         "options": {"protect": True, "retain_on_delete": True, "delete_before_replace": True}},
    ]}
    assert render_tree(result) == ("stack s (blueprint: -)\n  berth:a:A a\n"
                                   "    docker:index/container:Container c image=x:1 [protect, retain, "
                                   "delete-before-replace]\noutputs:\n  x: 1")


def test_show_secrets_reveals_the_connections():
    run = berth("synth", "--stack", "dev", "--show-secrets")
    assert run.returncode == 0
    connections = json.loads(run.stdout)["outputs"]["connections"]
    assert list(connections) == ["postgres.url", "postgres.databases.demo.url", "redis.url"]
    assert re.fullmatch(r"redis://:[A-Za-z0-9]{32}@redis:6379/0", connections["redis.url"])
    demo_url = connections["postgres.databases.demo.url"]
    assert re.fullmatch(r"postgresql://demo:[A-Za-z0-9]{32}@postgres:5432/demo", demo_url)


def test_blueprint_flag():
    run = berth("synth", "--stack", "staging", "--blueprint", "webprometrics", "--format", "tree")
    assert run.returncode == 0
    assert run.stdout.splitlines()[:2] == ["stack staging (blueprint: webprometrics)",
                                           "  berth:stack:Stack webprometrics-staging"]


def test_bad_config_is_one_line_and_exit_2(project_copy):
    run = berth("synth", "--stack", "broken", cwd=project_copy)
    assert (run.returncode, run.stdout, run.stderr) == (2, "", "berth:apps.backend.port: 70000 is not in 1..65535\n")


def test_several_problems_are_one_line_each(project_copy):
    run = berth("synth", "--stack", "twice", "--format", "tree", cwd=project_copy)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.splitlines() == ["berth:domain: 'Not A Domain' is not a domain name like example.com",
                                       "berth:apps.backend.port: 0 is not in 1..65535"]


def test_the_copy_runs_the_good_stacks_too(project_copy):
    run = berth("synth", "--stack", "staging", cwd=project_copy)
    assert run.returncode == 0 and json.loads(run.stdout)["stack"] == "staging"


def test_unknown_stack():
    run = berth("synth", "--stack", "qa")
    assert (run.returncode, run.stdout) == (2, "")
    known = sorted(path.name.removeprefix("Pulumi.").removesuffix(".yaml") for path in ROOT.glob("Pulumi.*.yaml"))
    assert {"dev", "staging", "prod"} <= set(known)
    assert run.stderr == f"berth:stack: 'qa' is not one of {known}\n"


def test_unknown_blueprint():
    run = berth("synth", "--stack", "dev", "--blueprint", "nope")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.startswith("berth:blueprint: 'nope' is not one of ['ai-present-finder', ")
    assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1


def test_usage_errors_are_argparse_errors():
    run = berth("synth")
    assert run.returncode == 2 and "--stack" in run.stderr and "Traceback" not in run.stderr


def test_library_synth_raises_config_error_before_any_resource():
    with pytest.raises(ConfigError) as caught:
        synth("dev", raw_overrides={"apps": {"web": {"port": 70000}}})
    assert str(caught.value) == "berth:apps.web.port: 70000 is not in 1..65535"
