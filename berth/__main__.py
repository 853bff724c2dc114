"""Command line: `python -m berth synth|backup|restore --stack NAME ...`.

`synth [--blueprint NAME] [--format json|tree] [--show-secrets] [--preflight]` prints the desired state;
`--preflight` reaches the stack's Docker host first, as `pulumi preview` does; synth is offline without it.
`backup now|list|check` and `restore WHAT` run in the stack's backup container (berth/ops.py).
"""

from __future__ import annotations

import argparse
import sys

from berth.errors import ConfigError

EXIT_HOST = 1
EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the command; bad config prints one line per problem and exits 2."""
    parser = argparse.ArgumentParser(prog="berth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="print a stack's desired state without Pulumi, backend or Docker")
    synth.add_argument("--stack", required=True, help="dev, staging, prod, or any Pulumi.<stack>.yaml")
    synth.add_argument("--blueprint", help="a file in blueprints/, instead of the stack's own")
    synth.add_argument("--format", choices=("json", "tree"), default="json")
    synth.add_argument("--show-secrets", action="store_true", help="print secret values instead of [secret]")
    synth.add_argument("--preflight", action="store_true", help="reach the stack's Docker host first, as preview does")
    from berth import ops

    ops.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command in ("backup", "restore"):
        try:
            return ops.run(args)
        except ConfigError as error:
            print(error, file=sys.stderr)
            return EXIT_CONFIG

    import pulumi

    from berth.synth import render_tree, write_json
    from berth.synth import synth as run_synth

    try:
        result = run_synth(args.stack, args.blueprint, reveal=args.show_secrets, preflight=args.preflight)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_CONFIG
    except pulumi.RunError as error:  # the host preflight's problems, one per line
        print(error, file=sys.stderr)
        return EXIT_HOST
    if not args.preflight:
        print(f"berth: synth skips the host preflight ({result['outputs']['host']} is not contacted); "
              "--preflight runs it", file=sys.stderr)
    print(write_json(result) if args.format == "json" else render_tree(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
