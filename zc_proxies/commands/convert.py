"""``zcbench convert nb101 --from X.tfrecord --to nb101.h5``: parse an official file once."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="convert an official benchmark file into a fast-loading HDF5 file",
        description="Convert an official benchmark file to HDF5. Supported: nb101 (the official "
                    "nasbench_only108.tfrecord or nasbench_full.tfrecord; no TensorFlow needed). Open the "
                    "result with get_space('nb101', source='nb101.h5').")
    p.add_argument("benchmark", choices=["nb101"], help="which benchmark the file belongs to")
    p.add_argument("--from", dest="source", required=True, metavar="FILE", help="the official record file")
    p.add_argument("--to", dest="target", required=True, metavar="FILE", help="HDF5 file to write (.h5)")
    p.add_argument("--overwrite", action="store_true", help="replace TARGET if it exists")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the CRC32C checks of the records (faster; not recommended)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..spaces.nb101.convert import tfrecord_to_h5

    report = tfrecord_to_h5(args.source, args.target, overwrite=args.overwrite, verify=args.verify,
                            progress=not args.quiet)
    print(report)
    return 0
