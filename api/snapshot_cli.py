"""`quiver snapshot create|list|download|upload|recover|delete`: snapshot work against a
running server over REST."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("snapshot", help="create, list, download, upload, recover or delete "
                       "snapshots on a running server")
    p.set_defaults(snapshot_command=None)


def main(args: argparse.Namespace) -> int:
    return 2
