"""No documented `pulumi config set` passes a PEM as an argument (berth issue 10).

`pulumi config set --secret --path berth:host.key "$(cat key.pem)"` fails with `bad flag syntax`, since
a PEM starts with `-----`, and the CLI then prints the whole private key. The PEM goes in on stdin
(`< key.pem`). Scanned: README.md, docs/, scripts/, blueprints/ and the stack files.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["README.md", "docs/**/*.md", "scripts/*.sh", ".ci/*", "blueprints/*.yaml", "Pulumi*.yaml"]
PEM_KEYS = re.compile(r"^berth:host\.(ca|cert|key)$")
# A value that carries a file's content or a PEM itself, rather than reading it from stdin.
PEM_VALUE = re.compile(r"\$\(|`|BEGIN|-----|\.(pem|crt|key)$")


def commands(text: str) -> list[str]:
    """Every `pulumi config set ...` command, with backslash continuations joined."""
    joined = text.replace("\\\n", " ")
    return [match.group(0) for match in re.finditer(r"pulumi config set\b[^\n]*", joined)]


def problems(command: str) -> list[str]:
    """What is wrong with one command: a PEM as an argument, or TLS material set without --secret."""
    rest = command.split("pulumi config set", 1)[1]
    shell = shlex.shlex(rest, posix=False, punctuation_chars="<>|;&")
    shell.whitespace_split = True
    tokens = list(shell)
    words = tokens[:next((i for i, t in enumerate(tokens) if t in {"<", "<<", "|", ";", "&&", "||"}), len(tokens))]
    flags = {w for w in words if w.startswith("--") and w != "--"}
    positional = [w for w in words if not w.startswith("--")]
    found = []
    if len(positional) >= 2 and PEM_VALUE.search(positional[1]):
        found.append(f"passes {positional[1]} as an argument: read it from stdin (< file.pem)")
    if positional and PEM_KEYS.match(positional[0]) and "--secret" not in flags:
        found.append(f"sets {positional[0]} without --secret")
    return found


def documented() -> list[tuple[str, str]]:
    found = []
    for pattern in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file():
                found += [(str(path.relative_to(ROOT)), command) for command in commands(path.read_text())]
    return found


def test_the_readme_documents_every_pem_on_stdin():
    readme = [command for path, command in documented() if path == "README.md"]
    for key in ("ca", "cert", "key"):
        assert f"pulumi config set --secret --path berth:host.{key} < {key}.pem" in readme


def test_no_documented_command_passes_a_pem_as_an_argument():
    assert [(path, command, problems(command)) for path, command in documented() if problems(command)] == []


@pytest.mark.parametrize("command", [
    'pulumi config set --secret --path berth:host.key "$(cat key.pem)"',
    "pulumi config set --secret --path berth:host.ca -- \"$(cat ca.pem)\"",
    "pulumi config set --path --secret berth:host.cert `cat cert.pem`",
    "pulumi config set --secret --path berth:host.key ./deploy/key.pem",
    'pulumi config set --secret --path berth:host.ca "-----BEGIN CERTIFICATE-----"',
    "pulumi config set --path berth:host.key < key.pem",
])
def test_the_scan_catches_each_bad_form(command):
    assert problems(command)


@pytest.mark.parametrize("command", [
    "pulumi config set --secret --path berth:host.key < key.pem",
    "pulumi config set --path berth:host.url tcp://203.0.113.10:2376",
    "cat key.pem | pulumi config set --secret --path berth:host.key",
])
def test_the_scan_passes_the_working_forms(command):
    assert problems(command) == []


def test_commands_across_continuation_lines_are_joined():
    text = 'pulumi config set --secret --path \\\n  berth:host.key "$(cat key.pem)"\n'
    assert [problems(c) for c in commands(text)] == [
        ['passes "$(cat key.pem)" as an argument: read it from stdin (< file.pem)']]
