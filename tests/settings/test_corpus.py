"""The bad-config corpus (tests/settings/corpus/): every file is refused with one line naming its key.

Each file is read as a Pulumi.<stack>.yaml would be, by the same code synth and `pulumi up` use
(from_stack_files, then load_settings). A file counts as refused cleanly only if a ConfigError is
raised and its text names the expected key; a traceback or an accepted file fails the test. The
tally is printed, so CI logs show it.
"""

from __future__ import annotations

import re
import shutil
import traceback
from pathlib import Path

import pytest

from berth.errors import ConfigError
from berth.settings import from_stack_files, load_settings
from berth.settings.loader import PROJECT_ROOT

CORPUS = Path(__file__).resolve().parent / "corpus"
FILES = sorted(CORPUS.glob("*.yaml"))
_HEADER = re.compile(rb"# (expect|stack): (.*)\n")


def expectations(path: Path) -> tuple[str, str]:
    found = dict((k.decode(), v.decode()) for k, v in _HEADER.findall(path.read_bytes()[:400]))
    return found["expect"], found.get("stack", "corpus")


def outcome(path: Path, root: Path) -> tuple[str, str]:
    """("refused" | "refused-without-key" | "traceback" | "accepted", detail)."""
    expect, stack = expectations(path)
    shutil.copyfile(path, root / f"Pulumi.{stack}.yaml")
    try:
        load_settings(from_stack_files(stack, root))
    except ConfigError as error:
        text = str(error)
        lines = text.split("\n")
        well_formed = all(line.startswith("berth:") for line in lines)
        return ("refused" if expect in text and well_formed else "refused-without-key"), text
    except BaseException:  # noqa: BLE001 - any other exception is what this test exists to catch
        return "traceback", traceback.format_exc(limit=3)
    return "accepted", ""


def test_the_corpus_is_large_enough():
    assert len(FILES) >= 200


def test_every_bad_config_is_refused_cleanly_naming_its_key(tmp_path, capsys):
    shutil.copyfile(PROJECT_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    results = {path.stem: outcome(path, tmp_path) for path in FILES}
    tally = {kind: sorted(name for name, (got, _) in results.items() if got == kind)
             for kind in ("refused", "refused-without-key", "traceback", "accepted")}
    with capsys.disabled():
        print(f"\nbad-config corpus: {len(FILES)} files; " + ", ".join(f"{k}: {len(v)}" for k, v in tally.items()))
    failures = {name: results[name] for kind, names in tally.items() if kind != "refused" for name in names}
    assert not failures, "\n".join(f"{name}: {kind}: {detail}" for name, (kind, detail) in failures.items())


@pytest.mark.parametrize("path", FILES[:1], ids=lambda p: p.stem)
def test_corpus_files_say_what_they_expect(path):
    expect, stack = expectations(path)
    assert expect and stack
