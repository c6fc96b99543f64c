"""``zcbench list proxies|spaces [PATTERN]``."""

from __future__ import annotations

import argparse

from ..proxies import get_proxy, list_proxies
from ..spaces import list_specs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list registered proxies or search spaces")
    p.add_argument("what", choices=["proxies", "spaces"])
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'fish*'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "spaces":  # every value --space accepts
        for name in list_specs(args.pattern):
            print(name)
        return 0
    rows = [("name", "labels", "grads", "bn", "higher", "network", "version", "population", "description")]
    for name in list_proxies(args.pattern):
        s = get_proxy(name).spec
        population = f"{s.aggregate}({','.join(c.name for c in s.components)})" if s.population else "-"
        rows.append((s.name, _yn(s.needs_labels), _yn(s.needs_grad), s.bn_mode,
                     "better" if s.higher_is_better else "worse", s.network, s.version, population, s.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return 0


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"
