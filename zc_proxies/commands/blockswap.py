"""``zcbench blockswap search|params``: BlockSwap's Fisher-potential search under a parameter budget."""

from __future__ import annotations

import argparse
import json

from ..errors import ZCBenchError


def _budget(text: str) -> int:
    from ..blockswap.search import parse_budget

    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("blockswap", help="BlockSwap: pick a cheap mixed-block network by Fisher potential")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    s = sub.add_parser("search", help="score random block mixes within a parameter budget; keep the best",
                       description="Rejection-sample configurations of NET within BUDGET +- tolerance parameters, "
                                   "score each by fisher_potential on one training minibatch, write the best.")
    s.add_argument("--net", default="wrn-40-2", help="wrn-<depth>-<width> or resnet-34 (default: wrn-40-2)")
    s.add_argument("--budget", type=_budget, required=True, help="parameter budget, e.g. 800k, 1.5M, 800000")
    s.add_argument("--tolerance", type=float, default=0.025, help="relative window around the budget (0.025)")
    s.add_argument("--samples", type=int, default=1000, help="number of candidates (1000)")
    s.add_argument("--seed", type=int, default=0, help="search seed (0)")
    s.add_argument("--batch-size", type=int, default=128, help="images in the scoring minibatch (128)")
    s.add_argument("--dataset", choices=["cifar10", "cifar100", "imagenet"], default=None,
                   help="training images (default: cifar10 for WRN, imagenet for ResNet)")
    s.add_argument("--classes", type=int, default=None, help="network head size (default: the dataset's)")
    s.add_argument("--shared-batch", action="store_true",
                   help="score all candidates on one minibatch (default: each its own, as the authors' code)")
    s.add_argument("--channels-last", action="store_true",
                   help="score in NHWC layout: ~1.8x faster on CPU, float32 scores ~0.4%% less exact")
    s.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    s.add_argument("--out", required=True, help="JSON file for the winner (config, params, score, seed)")
    s.add_argument("--store", default=None, help="JSONL store of every candidate; a rerun resumes from it")
    s.add_argument("--device", default="cpu", help="torch device for scoring (cpu, cuda, cuda:1...)")
    s.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; on a busy machine 1 is often fastest)")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.set_defaults(func=run_search)

    c = sub.add_parser("params", help="parameter count of a network or configuration, and the feasible range")
    c.add_argument("--net", default="wrn-40-2", help="network skeleton (default: wrn-40-2)")
    c.add_argument("--config", default=None, help="configuration JSON file (e.g. a search's --out)")
    c.add_argument("--classes", type=int, default=None, help="head size (default: 10 for WRN, 1000 for ResNet)")
    c.set_defaults(func=run_params)


def run_search(args: argparse.Namespace) -> int:
    import torch

    from ..blockswap.config import Configuration
    from ..blockswap.networks import get_net
    from ..blockswap.search import PROXY, SearchSettings, search

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_net(args.net)
    dataset = args.dataset or ("cifar10" if spec.family == "wrn" else "imagenet")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ZCBenchError(f"--device {args.device}: CUDA is not available on this machine")
    settings = SearchSettings(net=spec.name, budget=args.budget, samples=args.samples, seed=args.seed,
                              batch_size=args.batch_size, tolerance=args.tolerance, dataset=dataset,
                              num_classes=args.classes, shared_batch=args.shared_batch,
                              channels_last=args.channels_last)
    result = search(settings, data_dir=args.data, store=args.store, device=args.device,
                    progress=not args.no_progress)
    best = result.best
    config = Configuration(best["net"], tuple(best["blocks"]), best["num_classes"])
    config.save(args.out, params=best["params"], score=best["score"], seed=best["seed"], index=best["index"],
                proxy=PROXY, search=settings.fingerprint(), samples=settings.samples)
    failed = sum(r["status"] != "ok" for r in result.rows)
    print(f"best of {len(result.rows)} candidates (index {best['index']}, {failed} not scored): "
          f"{best['params']:,} parameters, {PROXY} {best['score']:.6g}")
    print(f"feasible range {result.feasible[0]:,}..{result.feasible[1]:,}; "
          f"{result.scored} scored in {result.seconds:.1f} s; winner written to {args.out}")
    return 0


def run_params(args: argparse.Namespace) -> int:
    from ..blockswap.config import Configuration
    from ..blockswap.networks import get_net
    from ..blockswap.search import feasible_range

    if args.config:
        config = Configuration.load(args.config)
        spec, k = config.spec, config.num_classes
        print(json.dumps({"net": config.net, "num_classes": k, "params": config.params}))
    else:
        spec = get_net(args.net)
        k = spec.num_classes if args.classes is None else args.classes
        print(json.dumps({"net": spec.name, "num_classes": k, "params": spec.params(spec.standard(), k)}))
    lo, hi = feasible_range(spec, num_classes=k)
    print(f"feasible range over the paper's block pool: {lo:,}..{hi:,} parameters")
    return 0
