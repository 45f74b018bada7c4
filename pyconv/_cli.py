"""Command line: ``pyconv`` / ``python -m pyconv``.

User mistakes (bad JSON, unknown op, wrong shapes, missing files) print one line on
standard error and exit with status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_ops(args):
    from pyconv._registry import available_ops, get_op

    names = available_ops()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {get_op(name).summary}")


def _cmd_describe(args):
    from pyconv._registry import get_op

    op = get_op(args.op)
    print(f"{op.name}: {op.summary}\n\nspec keys:")
    for k in op.keys:
        default = "required" if k.required else f"default {json.dumps(k.default)}"
        print(f"  {k.name:<16} {k.type_doc} ({default})")
        if k.doc:
            print(f"  {'':<16} {k.doc}")
    if op.inputs:
        print(f"\napply() inputs: {', '.join(op.inputs)}")
    if op.formulas:
        print("\nrules:")
        for name, text in op.formulas.items():
            print(f"  {name:<8} {text}")


def _cmd_demo(args):
    from pyconv._demo import run_demo

    run_demo(None if args.no_pictures else args.out, repeats=args.repeats)


def _cmd_config(args):
    from pyconv._config import show_config

    show_config()


def build_parser():
    parser = argparse.ArgumentParser(prog="pyconv", description="CNN convolution and "
                                     "pooling ops on NumPy arrays.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ops", help="list the registered ops")
    p.set_defaults(func=_cmd_ops)
    p = sub.add_parser("describe", help="spec keys and rules of one op")
    p.add_argument("op")
    p.set_defaults(func=_cmd_describe)
    p = sub.add_parser("demo", help="run ops on the embedded sample image")
    p.add_argument("--out", default="pyconv-demo", help="folder for the pictures")
    p.add_argument("--no-pictures", action="store_true", help="print the table only")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per op")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("config", help="show the build and runtime configuration")
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, OSError, KeyError) as e:
        print(f"pyconv: error: {e}", file=sys.stderr)
        return 2
    return 0
