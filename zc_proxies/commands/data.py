"""``zcbench data list|fetch|verify``: the data items zcbench can use, downloading and checking them.

The items are :mod:`zc_proxies.data.catalog`; downloading and checking are
:mod:`zc_proxies.data.fetch`. ``$ZCBENCH_MIRROR`` replaces the base URL of
every download (the file name is kept).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..data.catalog import ITEMS, MIRROR_ENV, human_size, locate
from ..data.fetch import fetch, verify
from ..data.images import DATA_ENV, data_root
from ..errors import DataError
from ._common import say

NAME = "zcbench data"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data", help="list, fetch and verify the data items zcbench uses",
        description="List the data items zcbench can use (present or missing under the data root), download "
                    "those with stable public URLs into the official layout, and check present items against "
                    f"their published checksums. ${MIRROR_ENV}=http://host:port/ replaces every download's "
                    "base URL (the file name is kept).")
    actions = p.add_subparsers(dest="data_action", metavar="ACTION")
    actions.required = True

    ls = actions.add_parser("list", help="every data item: present or missing, size, use, source, fetchable",
                            description="A table of every data item zcbench can use.")
    _data_option(ls)
    ls.set_defaults(func=run_list)

    f = actions.add_parser("fetch", help="download items into the official layout under the data root",
                           description="Download, check and unpack items into the official layout under the data "
                                       "root. Interrupted downloads continue where they stopped.")
    f.add_argument("names", nargs="+", metavar="NAME", help=f"item(s) to fetch: {_fetchable()}")
    _data_option(f)
    f.add_argument("--force", action="store_true",
                   help="replace an item that is there but does not match (NDS: replace JSON files already there)")
    f.add_argument("--keep-archive", action="store_true",
                   help="keep the downloaded archive in <data root>/.zcbench-downloads/")
    f.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (default: a bar when stderr is a terminal)")
    f.set_defaults(func=run_fetch)

    v = actions.add_parser("verify", help="check present items against their published checksums",
                           description="Check items against their published checksums (CIFAR: each file of the "
                                       "official layout, as torchvision lists them). Exit status 2, with one line "
                                       "per problem, if any does not match.")
    v.add_argument("names", nargs="*", metavar="NAME", help="items to check (default: every item present)")
    _data_option(v)
    v.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar while hashing")
    v.set_defaults(func=run_verify)


def _data_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help=f"data root (default: ${DATA_ENV})")


def _fetchable() -> str:
    return ", ".join(name for name, item in ITEMS.items() if item.fetchable)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]


def run_list(args: argparse.Namespace) -> int:
    root = data_root(args.data)
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    print(f"data root: {root}" + (f"   (downloads from ${MIRROR_ENV}={mirror})" if mirror else ""))
    print()
    status_rows = [("item", "status", "size", "fetch", "found at")]
    for found in (locate(item, root) for item in ITEMS.values()):
        where = found.where
        if found.partial_download is not None:
            part = f"partial download {human_size(found.partial_download.stat().st_size)} in " \
                   f"{found.partial_download.parent.name}/"
            where = part if where == "-" else f"{where}; {part}"
        size = human_size(found.size) if found.status != "missing" else "-"
        status_rows.append((found.item.name, found.status, size, found.item.fetch_summary(), where))
    print("\n".join(_table(status_rows)))
    print()
    print("\n".join(_table([("item", "used for", "official source")]
                           + [(i.name, i.used_by, i.source) for i in ITEMS.values()])))
    print()
    print("fetch (zcbench data fetch NAME):")
    for item in ITEMS.values():
        d = item.download
        if d is None:
            continue
        size = f"{human_size(d.size)} ({d.size:,} bytes; size from {d.size_source})" if d.size else "size unknown"
        print(f"  {item.name}: {d.url} -> {item.target}/; {size}")
        if d.checksum is not None:
            print(f"    {d.checksum} (published in {d.checksum.source})")
        else:
            print(f"    no published checksum: {d.no_checksum}")
        if item.checks and item.download.kind == "tar":
            print(f"    unpacked files checked against {item.checks[0][1].algorithm}s published in "
                  f"{item.checks[0][1].source}")
    print("not fetched by zcbench:")
    for item in ITEMS.values():
        if item.download is None:
            print(f"  {item.name}: {item.fetch_note}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    root = data_root(args.data)
    for name in dict.fromkeys(args.names):
        result = fetch(name, root, force=args.force, keep_archive=args.keep_archive, progress=args.progress,
                       say=lambda text, n=name: say(NAME, f"{n}: {text}"))
        if result.action == "present":
            print(f"{result.item.name}: {result.note} at {result.path}; nothing to do")
        else:
            print(f"{result.item.name}: fetched into {result.path} ({result.note})")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    root = data_root(args.data)
    verdicts = verify(args.names, root, progress=args.progress)
    if not verdicts:
        print(f"nothing to verify: no data item is under {root}")
        return 0
    width = max(len(v.item.name) for v in verdicts)
    failed = []
    for v in verdicts:
        if v.problems:
            failed.append(v)
            for problem in v.problems:
                print(f"{NAME}: verify: {v.item.name}: {problem}", file=sys.stderr)
        else:
            print(f"{v.status.ljust(9)}  {v.item.name.ljust(width)}  {v.note}")
    if failed:
        count = sum(len(v.problems) for v in failed)
        raise DataError(f"verify found {count} problem{'s' if count != 1 else ''} in "
                        f"{', '.join(v.item.name for v in failed)} under {root}")
    return 0
