"""Engine bench: per blueprint, the time from apply to all-healthy on the local Docker engine.

    .venv/bin/python bench/engine_bench.py [BLUEPRINT ...]

Each blueprint's desired state (`berth synth` under Pulumi.engine.yaml, as the engine tier deploys
it) is applied by the engine tier's applier (tests/engine/applier.py), timed, and torn down,
volumes included. Blueprints run one after another (they share the proxy's ports). Needs dockerd and
the berth-engine/* images (bash .ci/engine.sh).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "engine")]

from applier import Applier, cleanup  # noqa: E402
from engine_config import BLUEPRINTS, engine_synth, print_excluded  # noqa: E402
from engine_host import client, load_build_module, ping  # noqa: E402


def bench(blueprint: str, engine, quiet: bool) -> dict[str, float]:  # noqa: ANN001
    print_excluded(blueprint)
    begin = time.monotonic()
    result = engine_synth(blueprint)
    synth_seconds = time.monotonic() - begin
    applier = Applier(engine, result, log=(lambda _line: None) if quiet else None)
    cleanup(engine, applier.stack, applier.stack + "-")
    try:
        report = applier.apply()
        slowest = max((c for c in applier.state.values() if c.t_ready), key=lambda c: c.t_ready - c.t_started)
        return {"synth_s": synth_seconds, "apply_to_all_healthy_s": report["seconds"],
                "containers": report["containers"], "slowest": slowest.docker_name,
                "slowest_s": slowest.t_ready - slowest.t_started}
    finally:
        begin = time.monotonic()
        applier.teardown(keep_retained=False)
        cleanup(engine, applier.stack, applier.stack + "-")
        teardown_seconds = time.monotonic() - begin
        print(f"  ({blueprint} torn down in {teardown_seconds:.1f}s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("blueprints", nargs="*", metavar="BLUEPRINT", help=f"subset of {', '.join(BLUEPRINTS)}")
    parser.add_argument("--verbose", action="store_true", help="print every resource the applier creates")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.blueprints) - set(BLUEPRINTS))
    if unknown:
        parser.error(f"unknown blueprint(s): {', '.join(unknown)}")
    if not ping():
        print("engine_bench: no Docker engine (run: bash .ci/engine.sh)", file=sys.stderr)
        return 1
    load_build_module().ensure_images()
    engine = client()
    rows = []
    for blueprint in args.blueprints or BLUEPRINTS:
        rows.append((blueprint, bench(blueprint, engine, quiet=not args.verbose)))
    print(f"\n{'blueprint':20} {'containers':>10} {'apply->all healthy':>19} {'synth':>7}  slowest container")
    for blueprint, row in rows:
        print(f"{blueprint:20} {row['containers']:>10} {row['apply_to_all_healthy_s']:>18.1f}s "
              f"{row['synth_s']:>6.1f}s  {row['slowest']} ({row['slowest_s']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
