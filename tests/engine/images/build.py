#!/usr/bin/env python3
"""Build the local images of berth's real-engine test tier (no registry needed).

    python3 tests/engine/images/build.py [--force] [NAME ...]

* ``berth-engine/debian:bookworm``: a debootstrap'ed Debian bookworm (minbase) imported with
  ``docker import``. Built when missing, or when its recipe below changed (label ``berth.recipe``).
* ``berth-engine/minio:<key>`` only when named (the backup tier does): a real MinIO server, from a
  binary built by ``go install`` (MINIO_MODULE) outside the repository; the key covers the binary too.
* ``berth-engine/<name>:<key>`` for every ``<name>/Dockerfile`` in IMAGES (or its CONTEXTS dir), where ``<key>`` is the
  first 12 hex digits of a sha256 over the files of ``<name>/`` and the base image id. An existing
  ``<name>:<key>`` is reused, so a rebuild only happens when the directory (or the base) changed.
  Every image is also tagged ``:latest`` and ``:v2`` (the same image under a second tag, for tests
  that "bump" an image tag).

Stdlib only; talks to the engine through the ``docker`` CLI. Pytest fixtures call
``ensure_images()``. A file lock serialises concurrent callers (e.g. pytest-xdist workers).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFIX = "berth-engine"
BASE = f"{PREFIX}/debian:bookworm"
IMAGES = ("postgres", "redis", "rabbitmq", "nginx", "standin", "demo", "certbot", "provision-target")
# Built only when asked for by name: they need a binary from outside the repository.
ON_DEMAND = ("minio",)
# The MinIO server the backup tier runs (scripts/test.sh installs exactly this).
MINIO_MODULE = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
# Files copied into an image's build context from outside the repository: name -> (file, env var).
EXTERNAL = {"minio": ("minio", "BERTH_MINIO_BINARY")}
# Images whose build context is not a directory here: the demo app is the product's own (demo/app).
CONTEXTS = {"demo": HERE.parents[2] / "demo" / "app"}
EXTRA_TAGS = ("latest", "v2")
MIRROR = "http://deb.debian.org/debian"
LOCK_FILE = Path(tempfile.gettempdir()) / "berth-engine-build.lock"
LOG_DIR = Path(tempfile.gettempdir()) / "berth-engine-build"
LOG_TAIL = 40

# Files written into the base rootfs before `docker import`, like Debian's official images do:
# bookworm + updates + security from deb.debian.org, no translations, no service starts from
# postinst scripts (there is no init system in a container).
BASE_FILES = {
    "etc/apt/sources.list": (
        f"deb {MIRROR} bookworm main\n"
        f"deb {MIRROR} bookworm-updates main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n"
    ),
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
    "usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n",
}
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["bash"]',
)
BASE_RECIPE = hashlib.sha256(repr((MIRROR, BASE_FILES, BASE_CHANGES)).encode()).hexdigest()[:12]


class BuildError(RuntimeError):
    pass


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def _check_engine() -> None:
    if shutil.which("docker") is None:
        raise BuildError("no docker CLI on PATH (run .ci/engine.sh)")
    res = _docker("info", "--format", "{{.ServerVersion}}", check=False)
    if res.returncode != 0:
        raise BuildError(f"docker engine not reachable (run .ci/engine.sh): {res.stderr.strip()}")


def _image_id(ref: str) -> str | None:
    res = _docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def _run_logged(cmd: list[str], log: Path, what: str, **kwargs) -> None:
    """Run cmd with stdout+stderr to log; on failure raise BuildError with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if res.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        raise BuildError(f"{what} failed (exit {res.returncode}, log {log}):\n" + "\n".join(tail))


def _base_recipe_label() -> str | None:
    res = _docker("image", "inspect", "--format", '{{index .Config.Labels "berth.recipe"}}', BASE, check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_base(force: bool = False) -> str:
    """Build BASE with debootstrap + docker import unless an up-to-date one exists; return its id."""
    if not force and _base_recipe_label() == BASE_RECIPE:
        print(f"{BASE:40} cached", flush=True)
        return _image_id(BASE)
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (run .ci/engine.sh)")
    start = time.monotonic()
    rootfs = Path(tempfile.mkdtemp(prefix="berth-engine-rootfs."))
    try:
        _run_logged(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), MIRROR],
            LOG_DIR / "debootstrap.log",
            "debootstrap",
        )
        # debootstrap leaves its .debs and apt lists behind, and the host's resolv.conf
        for junk in [
            *(rootfs / "var/cache/apt/archives").glob("*.deb"),
            *(rootfs / "var/lib/apt/lists").glob("*_*"),
            rootfs / "etc/resolv.conf",
        ]:
            junk.unlink(missing_ok=True)
        for rel, text in BASE_FILES.items():
            path = rootfs / rel
            path.write_text(text)
            if text.startswith("#!"):
                path.chmod(0o755)
        changes = [
            arg for change in (*BASE_CHANGES, f"LABEL berth.recipe={BASE_RECIPE}") for arg in ("--change", change)
        ]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run_logged(
                ["docker", "import", *changes, "-", BASE], LOG_DIR / "import.log", "docker import", stdin=tar.stdout
            )
        finally:
            tar.stdout.close()
            tar.wait()
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    print(f"{BASE:40} built in {time.monotonic() - start:.1f}s", flush=True)
    return _image_id(BASE)


def external_file(name: str) -> Path | None:
    """The outside file an image's build context needs (e.g. the minio binary), or None if it needs none."""
    if name not in EXTERNAL:
        return None
    file, variable = EXTERNAL[name]
    if os.environ.get(variable):
        path = Path(os.environ[variable])
    else:
        go = shutil.which("go") or "/usr/local/go/bin/go"
        gopath = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, check=False).stdout.strip() \
            if Path(go).exists() else ""
        path = Path(gopath or Path.home() / "go") / "bin" / file
    if not path.is_file():
        raise BuildError(f"the {name} image needs {path} (set {variable}, or `go install {MINIO_MODULE}`)")
    return path


def content_key(directory: Path, base_id: str, extra: Path | None = None) -> str:
    """sha256 over every file of directory (relative path, exec bit, content), an outside file and the base id."""
    digest = hashlib.sha256(base_id.encode())
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    for path in [*files, *([extra] if extra else [])]:
        if "__pycache__" in path.parts:
            continue
        digest.update(b"\0" + (path.name if path == extra else str(path.relative_to(directory))).encode())
        digest.update(b"\1" if os.access(path, os.X_OK) else b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _prune_stale_keys(repo: str, keep: str) -> None:
    """Untag the content-key tags of repo other than keep (left by earlier Dockerfile versions)."""
    res = _docker("image", "ls", "--format", "{{.Tag}}", repo, check=False)
    for tag in res.stdout.split():
        if tag != keep and re.fullmatch(r"[0-9a-f]{12}", tag):
            _docker("image", "rm", f"{repo}:{tag}", check=False)  # in use by a container: kept


def build_image(name: str, base_id: str, force: bool = False) -> str:
    """Build berth-engine/<name> unless its content key exists; (re)tag it latest and v2."""
    directory = CONTEXTS.get(name, HERE / name)
    extra = external_file(name)
    repo = f"{PREFIX}/{name}"
    keyed = f"{repo}:{content_key(directory, base_id, extra)}"
    start = time.monotonic()
    if not force and _image_id(keyed):
        for tag in EXTRA_TAGS:
            _docker("tag", keyed, f"{repo}:{tag}")
        print(f"{keyed:40} cached", flush=True)
        return keyed
    tags = [arg for tag in (keyed, *(f"{repo}:{t}" for t in EXTRA_TAGS)) for arg in ("-t", tag)]
    no_cache = ["--no-cache"] if force else []
    with tempfile.TemporaryDirectory(prefix=f"berth-engine-{name}.") as scratch:
        context = directory
        if extra is not None:  # the context plus the outside file, never the repository's own dir
            context = Path(scratch) / name
            shutil.copytree(directory, context)
            shutil.copy2(extra, context / EXTERNAL[name][0])
        cmd = ["docker", "build", "--rm", "--force-rm", "--build-arg", f"BASE={BASE}", *tags, *no_cache, str(context)]
        # The daemon (Debian's 20.10) has no BuildKit/buildx here: use the classic builder.
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        _run_logged(cmd, LOG_DIR / f"{name}.log", f"docker build {repo}", env=env)
    _prune_stale_keys(repo, keyed.rsplit(":", 1)[1])
    print(f"{keyed:40} built in {time.monotonic() - start:.1f}s", flush=True)
    return keyed


def ensure_images(names: tuple[str, ...] = IMAGES, force: bool = False) -> dict[str, str]:
    """Make sure the base and the named images exist; return name -> 'berth-engine/<name>:latest'."""
    unknown = sorted(set(names) - set(IMAGES) - set(ON_DEMAND))
    if unknown:
        raise ValueError(f"unknown image(s): {', '.join(unknown)}")
    LOCK_FILE.touch(exist_ok=True)
    with LOCK_FILE.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _check_engine()
        base_id = ensure_base()
        for name in names:
            build_image(name, base_id, force=force)
    return {name: f"{PREFIX}/{name}:latest" for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"subset of {', '.join(IMAGES)}; or {', '.join(ON_DEMAND)} (only when named)")
    parser.add_argument(
        "--force", action="store_true", help="rebuild the named images with --no-cache even if their key exists"
    )
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        ensure_images(tuple(args.names) or IMAGES, force=args.force)
    except (BuildError, ValueError) as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    print(f"{'total':40} {time.monotonic() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
