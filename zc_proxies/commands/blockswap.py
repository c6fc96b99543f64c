"""``zcbench blockswap search|params|train|distill``: BlockSwap's Fisher-potential search under a parameter
budget, and the training of the teacher and of the chosen student (attention transfer)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ZCBenchError
from ._common import add_runner_options, say


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
    s.add_argument("--batch-size", type=int, default=None,
                   help="images in the scoring minibatch (128; 2 with --dataset coco)")
    s.add_argument("--dataset", choices=["cifar10", "cifar100", "imagenet", "coco"], default=None,
                   help="training images (default: cifar10 for WRN, imagenet for ResNet); coco: rank Mask R-CNN "
                        "backbones (resnet-34) by the Fisher potential of the detection loss, budgeting the "
                        "backbone body (stem + blocks)")
    s.add_argument("--classes", type=int, default=None,
                   help="network head size (default: the dataset's; 91 COCO category ids with coco)")
    s.add_argument("--min-size", type=int, default=800, help="coco: Mask R-CNN's shorter image side (800)")
    s.add_argument("--max-size", type=int, default=1333, help="coco: Mask R-CNN's longest image side (1333)")
    s.add_argument("--shared-batch", action="store_true",
                   help="score all candidates on one minibatch (default: each its own, as the authors' code)")
    s.add_argument("--channels-last", action="store_true",
                   help="score in NHWC layout: ~1.8x faster on CPU, float32 scores ~0.4%% less exact")
    s.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    s.add_argument("--out", required=True, help="JSON file for the winner (config, params, score, seed)")
    s.add_argument("--store", default=None,
                   help="JSONL result store of every candidate; a rerun resumes from it (default: OUT with "
                        "'.candidates.jsonl' in place of its suffix)")
    s.add_argument("--device", default="cpu", help="torch device for scoring (cpu, cuda, cuda:1...)")
    add_runner_options(s)
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.set_defaults(func=run_search)

    c = sub.add_parser("params", help="parameter count of a network or configuration, and the feasible range")
    c.add_argument("--net", default="wrn-40-2", help="network skeleton (default: wrn-40-2)")
    c.add_argument("--config", default=None, help="configuration JSON file (e.g. a search's --out)")
    c.add_argument("--classes", type=int, default=None, help="head size (default: 10 for WRN, 1000 for ResNet)")
    c.set_defaults(func=run_params)

    t = sub.add_parser("train", help="train a network from scratch (the teacher, or any configuration)",
                       description="Train NET (all standard blocks) or a configuration file's network with "
                                   "cross-entropy, BlockSwap's CIFAR recipe. Resumable: rerun to continue.")
    t.add_argument("--net", default=None, help="network skeleton when no --config is given (default: wrn-40-2)")
    t.add_argument("--config", default=None, help="configuration JSON (e.g. a search's --out) instead of --net")
    t.add_argument("--classes", type=int, default=None, help="head size with --net (default: the dataset's)")
    _add_training_options(t)
    t.set_defaults(func=run_train)

    d = sub.add_parser("distill", help="train a configuration with attention transfer from a trained teacher",
                       description="Train the configuration from scratch with cross-entropy plus attention "
                                   "transfer (beta * 3/stages * sum of the stages' AT losses) from a frozen teacher. "
                                   "Resumable: rerun to continue.")
    d.add_argument("--config", required=True, help="configuration JSON of the student (e.g. a search's --out)")
    d.add_argument("--teacher", required=True, help="teacher: a 'blockswap train' output folder or its model.pt")
    d.add_argument("--teacher-net", default=None,
                   help="skeleton the teacher must have (default: the student's); another depth with the same "
                        "stages works too, e.g. a wrn-40-2 teacher for a wrn-16-2 student")
    d.add_argument("--beta", type=float, default=1e3, help="attention-transfer weight beta (1000)")
    _add_training_options(d)
    d.set_defaults(func=run_distill)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=200, help="epochs; the cosine schedule spans them (200)")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size (128)")
    p.add_argument("--lr", type=float, default=0.1, help="initial learning rate (0.1)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (5e-4)")
    p.add_argument("--cutout", type=int, default=16,
                   help="side of the Cutout square, as BlockSwap's code (16); 0 for crop and flip only")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batch order, augmentation, holdout (0)")
    p.add_argument("--dataset", choices=["cifar10", "cifar100"], default="cifar10", help="training images (cifar10)")
    p.add_argument("--holdout", type=int, default=0,
                   help="training images kept out of training and evaluated after each epoch (0)")
    p.add_argument("--train-images", type=int, default=None,
                   help="train on this many (seeded) of the remaining training images (default: all)")
    p.add_argument("--no-test", action="store_true", help="do not evaluate on the official test batch")
    p.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    p.add_argument("--out", required=True, help="output folder: checkpoint.pt, history.json/.csv, model.pt")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1...)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="hide the per-epoch progress bar")


def _search_runner(args: argparse.Namespace):
    """The store path, shard and runner of a search, all checked before anything is scored."""
    from pathlib import Path

    from ..runs.runner import Runner
    from ..runs.shards import resolve_shard
    from ..runs.store import check_writable

    out = check_writable(args.out, "--out")
    store = Path(args.store) if args.store else out.with_suffix(".candidates.jsonl")
    return check_writable(store, "--store"), resolve_shard(args.shard), Runner(args.workers, args.scheduler)


def run_search(args: argparse.Namespace) -> int:
    from ..blockswap.networks import get_net
    from ..blockswap.search import SearchSettings, save_winner, search

    spec = get_net(args.net)
    dataset = args.dataset or ("cifar10" if spec.family == "wrn" else "imagenet")
    if dataset == "coco":
        return _run_detection_search(args)
    batch_size = 128 if args.batch_size is None else args.batch_size
    settings = SearchSettings(net=spec.name, budget=args.budget, samples=args.samples, seed=args.seed,
                              batch_size=batch_size, tolerance=args.tolerance, dataset=dataset,
                              num_classes=args.classes, shared_batch=args.shared_batch,
                              channels_last=args.channels_last)
    store, shard, runner = _search_runner(args)
    with runner:
        result = search(settings, data_dir=args.data, store=store, device=args.device, threads=args.threads,
                        runner=runner, shard=shard, progress=not args.no_progress, wait=args.wait,
                        on_wait=lambda text: say("zcbench blockswap search", text))
    size = f"{result.best['params']:,} parameters" if result.best else ""
    return _finish_search(args, result, save_winner, "candidates", size, "range")


def _finish_search(args: argparse.Namespace, result: Any, save: Any, what: str, size: str, range_name: str) -> int:
    """Print a search's summary; write the winner file when every candidate is in the store."""
    best = result.best
    failed = sum(r["status"] != "ok" for r in result.rows)
    print(f"feasible {range_name} {result.feasible[0]:,}..{result.feasible[1]:,}; {result.scored} scored in "
          f"{result.seconds:.1f} s on {args.workers} worker(s); store {result.path}")
    for line in result.summary.failure_lines():
        print(f"  not scored: {line}")
    if best is None:
        print("no candidate could be scored")
        return 1
    print(f"best of {len(result.rows)} {what} (index {best['index']}, {failed} not scored): {size}, "
          f"fisher_potential {best['score']:.6g}")
    if not result.complete:
        print(f"this run holds only part of the candidates (shard {args.shard or 'from the environment'}); no "
              f"winner written. Join the shards' stores with `zcbench merge --out DIR STORES...`, then rerun "
              f"this command with --store DIR/scores.jsonl (and no --shard) to write the winner")
        return 0
    save(result, args.out)
    print(f"winner written to {args.out}")
    return 0


def _run_detection_search(args: argparse.Namespace) -> int:
    from ..blockswap.detection import DetectionSearchSettings, save_detection_winner, search_detection

    if args.channels_last:
        raise ZCBenchError("--channels-last is not supported with --dataset coco")
    settings = DetectionSearchSettings(
        net=args.net, budget=args.budget, samples=args.samples, seed=args.seed,
        batch_size=2 if args.batch_size is None else args.batch_size, tolerance=args.tolerance,
        min_size=args.min_size, max_size=args.max_size, shared_batch=args.shared_batch,
        **({} if args.classes is None else {"num_classes": args.classes}))
    store, shard, runner = _search_runner(args)
    with runner:
        result = search_detection(settings, data_dir=args.data, store=store, device=args.device,
                                  threads=args.threads, runner=runner, shard=shard, progress=not args.no_progress,
                                  wait=args.wait, on_wait=lambda text: say("zcbench blockswap search", text))
    best = result.best
    size = (f"{best['params']:,} body parameters ({best['backbone_params']:,} with the FPN, "
            f"{best['detector_params']:,} in the detector)") if best else ""
    return _finish_search(args, result, save_detection_winner,
                          f"Mask R-CNN backbones on {result.settings.get('dataset')}", size, "body range")


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


def _settings(args: argparse.Namespace, beta: float | None = None):
    from ..blockswap.train import TrainSettings

    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         cutout=args.cutout, seed=args.seed, **({} if beta is None else {"beta": beta}))


def _prepare(args: argparse.Namespace):
    import torch

    from ..data.training import load_training_data
    from ..runs.device import check_device

    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, evals, notes = load_training_data(args.dataset, args.data, holdout=args.holdout,
                                            limit=args.train_images, seed=args.seed, test=not args.no_test)
    for note in notes:
        print(f"note: {note}")
    described = ", ".join(f"{name} {len(ds):,}" for name, ds in evals.items()) or "none"
    print(f"training on {len(data):,} {data.name} images; evaluated after each epoch: {described}")
    return data, evals


def _report(row: dict) -> None:
    parts = [f"epoch {row['epoch']}", f"lr {row['lr']:.4g}", f"loss {row['train_loss']:.4f}",
             f"acc {row['train_acc']:.2f}%"]
    if "train_at" in row:
        parts.append(f"(ce {row['train_ce']:.4f}, at {row['train_at']:.4g})")
    for key in row:
        if key.endswith("_acc") and not key.startswith("train"):
            name = key[:-4]
            parts.append(f"| {name} loss {row[name + '_loss']:.4f} acc {row[key]:.2f}%")
    print("  ".join(parts) + f"  [{row['seconds']:.1f} s]", flush=True)


def _finish(result, args: argparse.Namespace, what: str) -> int:
    if result.resumed_from:
        print(f"resumed after epoch {result.resumed_from} from {result.out}")
    final = result.final
    accs = ", ".join(f"{k[:-4]} {final[k]:.2f}%" for k in final if k.endswith("_acc"))
    print(f"{what} done: {len(result.history)} epochs; final accuracy {accs}; "
          f"network in {result.out / 'model.pt'}, history in {result.out / 'history.csv'}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from ..blockswap.config import Configuration
    from ..blockswap.networks import get_net
    from ..blockswap.train import train

    settings = _settings(args)
    if args.config:
        config = Configuration.load(args.config)
        if args.net is not None and get_net(args.net).name != config.net:
            raise ZCBenchError(f"--net {args.net} disagrees with --config {args.config} (a {config.net} configuration)")
        if args.classes is not None and args.classes != config.num_classes:
            raise ZCBenchError(f"--classes {args.classes} disagrees with --config {args.config} "
                               f"({config.num_classes} classes)")
    else:
        spec = get_net(args.net or "wrn-40-2")
        classes = args.classes if args.classes is not None else (10 if args.dataset == "cifar10" else 100)
        config = Configuration.create(spec, spec.standard(), classes)
    data, evals = _prepare(args)
    print(f"training {config.net} ({config.params:,} parameters) for {settings.epochs} epochs into {args.out}")
    result = train(config, data, settings, args.out, eval_sets=evals, device=args.device,
                   progress=not args.no_progress, on_epoch=_report)
    return _finish(result, args, "training")


def run_distill(args: argparse.Namespace) -> int:
    from ..blockswap.checkpoint import load_network
    from ..blockswap.config import Configuration
    from ..blockswap.train import distill

    settings = _settings(args, beta=args.beta)
    config = Configuration.load(args.config)
    teacher, record = load_network(args.teacher, net=args.teacher_net or config.net, device=args.device)
    data, evals = _prepare(args)
    print(f"distilling {config.net} ({config.params:,} parameters) from a {record['net']} teacher "
          f"({sum(p.numel() for p in teacher.parameters()):,} parameters), beta {settings.beta:g}, "
          f"{settings.epochs} epochs, into {args.out}")
    result = distill(config, teacher, data, settings, args.out, eval_sets=evals, device=args.device,
                     progress=not args.no_progress, on_epoch=_report)
    return _finish(result, args, "distillation")
