"""``zcbench blockswap search|params|train|distill``: BlockSwap's Fisher-potential search under a parameter
budget, and the training of the teacher and of the chosen student (attention transfer) on CIFAR or ImageNet."""

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
    s.add_argument("--layout", choices=("auto", "nchw", "nhwc"), default="auto",
                   help="memory layout to score in (default auto: NHWC on the CPU, with exact BatchNorm statistics, "
                        "1.3x (WRN), 1.2x (ResNet-34) and 1.1x (COCO detectors) as fast with the same ranking; NCHW on "
                        "other devices); recorded in every row")
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
                                   "cross-entropy, BlockSwap's recipe for the dataset: CIFAR (cosine lr over 200 "
                                   "epochs, batch 128, weight decay 5e-4, Cutout) or ImageNet (Section 6: 100 "
                                   "epochs, lr 0.1 x0.1 every 30, batch 256, weight decay 1e-4, RandomResizedCrop "
                                   "224 + flip, mixed precision on CUDA). Resumable: rerun to continue.")
    t.add_argument("--net", default=None,
                   help="network skeleton when no --config is given (default: wrn-40-2; resnet-34 with imagenet)")
    t.add_argument("--config", default=None, help="configuration JSON (e.g. a search's --out) instead of --net")
    t.add_argument("--classes", type=int, default=None,
                   help="head size with --net (default: the dataset's, 1000 for imagenet)")
    _add_training_options(t)
    t.set_defaults(func=run_train)

    d = sub.add_parser("distill", help="train a configuration with attention transfer from a trained teacher",
                       description="Train the configuration from scratch with cross-entropy plus attention "
                                   "transfer (beta * 3/stages * sum of the stages' AT losses) from a frozen teacher, "
                                   "with the dataset's recipe (see 'train'). For ResNet-34's four stages beta 1000 "
                                   "gives the per-stage weight 750 of the paper's ImageNet section. "
                                   "Resumable: rerun to continue.")
    d.add_argument("--config", required=True, help="configuration JSON of the student (e.g. a search's --out)")
    d.add_argument("--teacher", required=True, help="teacher: a 'blockswap train' output folder or its model.pt")
    d.add_argument("--teacher-net", default=None,
                   help="skeleton the teacher must have (default: the student's); another depth with the same "
                        "stages works too, e.g. a wrn-40-2 teacher for a wrn-16-2 student")
    d.add_argument("--beta", type=float, default=None,
                   help="attention-transfer weight beta, rescaled by 3/stages per stage (1000: 1000 per stage for "
                        "a WRN's three, 750 for ResNet-34's four)")
    _add_training_options(d)
    d.set_defaults(func=run_distill)

    _add_detector_parsers(sub)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=None, help="epochs (200; imagenet 100)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (128; imagenet 256)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (0.1)")
    p.add_argument("--schedule", choices=["cosine", "step"], default=None,
                   help="learning-rate schedule: cosine to 1e-10 over the epochs (CIFAR) or step, x --lr-gamma "
                        "every --lr-step epochs (imagenet)")
    p.add_argument("--lr-step", type=int, default=None, help="step schedule: epochs between drops (30)")
    p.add_argument("--lr-gamma", type=float, default=None, help="step schedule: factor of each drop (0.1)")
    p.add_argument("--weight-decay", type=float, default=None, help="weight decay (5e-4; imagenet 1e-4)")
    p.add_argument("--cutout", type=int, default=None,
                   help="side of the Cutout square, as BlockSwap's CIFAR code (16; imagenet 0); 0 for none")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (float16 autocast + GradScaler) on CUDA devices, never on the CPU "
                        "(default: on for imagenet, off for CIFAR)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batch order, augmentation, holdout (0)")
    p.add_argument("--dataset", choices=["cifar10", "cifar100", "imagenet"], default="cifar10",
                   help="training images and recipe (cifar10); imagenet reads <data>/imagenet/train + val/, an "
                        "imagenet/ tree, or the imagenet-sample/")
    p.add_argument("--holdout", type=int, default=0,
                   help="training images kept out of training and evaluated after each epoch (0)")
    p.add_argument("--train-images", type=int, default=None,
                   help="train on this many (seeded) of the remaining training images (default: all)")
    p.add_argument("--no-test", action="store_true",
                   help="do not evaluate on the official test batch (CIFAR) or the val/ folder (imagenet)")
    p.add_argument("--image-size", type=int, default=None,
                   help="imagenet: network input side, of the random training crop and the evaluation centre "
                        "crop (224)")
    p.add_argument("--resize", type=int, default=None,
                   help="imagenet: shorter image side before the evaluation centre crop (256)")
    p.add_argument("--workers", type=int, default=None,
                   help="imagenet: data-loading processes (4); the batches do not depend on it")
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
    dataset = args.dataset or spec.default_dataset
    if dataset == "coco":
        return _run_detection_search(args)
    batch_size = 128 if args.batch_size is None else args.batch_size
    settings = SearchSettings(net=spec.name, budget=args.budget, samples=args.samples, seed=args.seed,
                              batch_size=batch_size, tolerance=args.tolerance, dataset=dataset,
                              num_classes=args.classes, shared_batch=args.shared_batch)
    store, shard, runner = _search_runner(args)
    with runner:
        result = search(settings, data_dir=args.data, store=store, device=args.device, threads=args.threads,
                        layout=args.layout, runner=runner, shard=shard, progress=not args.no_progress, wait=args.wait,
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

    settings = DetectionSearchSettings(
        net=args.net, budget=args.budget, samples=args.samples, seed=args.seed,
        batch_size=2 if args.batch_size is None else args.batch_size, tolerance=args.tolerance,
        min_size=args.min_size, max_size=args.max_size, shared_batch=args.shared_batch,
        **({} if args.classes is None else {"num_classes": args.classes}))
    store, shard, runner = _search_runner(args)
    with runner:
        result = search_detection(settings, data_dir=args.data, store=store, device=args.device,
                                  threads=args.threads, layout=args.layout, runner=runner, shard=shard,
                                  progress=not args.no_progress, wait=args.wait,
                                  on_wait=lambda text: say("zcbench blockswap search", text))
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
    """The dataset's recipe with the options given on the command line."""
    from ..blockswap.train import recipe

    return recipe(args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  weight_decay=args.weight_decay, cutout=args.cutout, seed=args.seed, beta=beta,
                  schedule=args.schedule, step_size=args.lr_step, gamma=args.lr_gamma, amp=args.amp)


def _workers(args: argparse.Namespace) -> int:
    if args.workers is None:
        return 4 if args.dataset == "imagenet" else 0
    if args.workers < 0:
        raise ZCBenchError(f"--workers must be 0 or more, got {args.workers}")
    return args.workers


def _prepare(args: argparse.Namespace, num_classes: int):
    import torch

    from ..data.training import load_training_data
    from ..runs.device import check_device

    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {}
    if args.dataset == "imagenet":
        extra = {"image_size": args.image_size, "resize": args.resize, "num_classes": num_classes}
    elif args.image_size is not None or args.resize is not None:
        raise ZCBenchError("--image-size and --resize apply to --dataset imagenet only")
    data, evals, notes = load_training_data(args.dataset, args.data, holdout=args.holdout,
                                            limit=args.train_images, seed=args.seed, test=not args.no_test, **extra)
    for note in notes:
        print(f"note: {note}")
    described = ", ".join(f"{name} {len(ds):,}" for name, ds in evals.items()) or "none"
    print(f"training on {len(data):,} {data.name} images; evaluated after each epoch: {described}")
    return data, evals


def _describe(settings, device: str) -> str:
    """The recipe in one line."""
    import torch

    amp = "on" if settings.amp and torch.device(device).type == "cuda" else "off"
    return (f"recipe: SGD momentum {settings.momentum:g}, lr {settings.describe_schedule()}, batch "
            f"{settings.batch_size}, weight decay {settings.weight_decay:g}, cutout {settings.cutout}, mixed "
            f"precision {amp}")


def _report(row: dict) -> None:
    parts = [f"epoch {row['epoch']}", f"lr {row['lr']:.4g}", f"loss {row['train_loss']:.4f}",
             f"acc {row['train_acc']:.2f}%"]
    if "train_at" in row:
        parts.append(f"(ce {row['train_ce']:.4f}, at {row['train_at']:.4g})")
    for key in row:
        if key.endswith("_acc") and not key.startswith("train"):
            name = key[:-4]
            top5 = f" top-5 {row[name + '_top5']:.2f}%" if name + "_top5" in row else ""
            parts.append(f"| {name} loss {row[name + '_loss']:.4f} acc {row[key]:.2f}%{top5}")
    print("  ".join(parts) + f"  [{row['seconds']:.1f} s]", flush=True)


def _finish(result, args: argparse.Namespace, what: str) -> int:
    if result.resumed_from:
        print(f"resumed after epoch {result.resumed_from} from {result.out}")
    final = result.final
    accs = ", ".join(f"{k[:-4]} {final[k]:.2f}%" + (f" (top-5 {final[k[:-4] + '_top5']:.2f}%)"
                                                   if k[:-4] + "_top5" in final else "")
                     for k in final if k.endswith("_acc"))
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
        spec = get_net(args.net or ("resnet-34" if args.dataset == "imagenet" else "wrn-40-2"))
        default = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}[args.dataset]
        config = Configuration.create(spec, spec.standard(), args.classes if args.classes is not None else default)
    data, evals = _prepare(args, config.num_classes)
    print(f"training {config.net} ({config.params:,} parameters) for {settings.epochs} epochs into {args.out}")
    print(_describe(settings, args.device))
    result = train(config, data, settings, args.out, eval_sets=evals, device=args.device,
                   progress=not args.no_progress, on_epoch=_report, workers=_workers(args))
    return _finish(result, args, "training")


def run_distill(args: argparse.Namespace) -> int:
    from ..blockswap.attention import at_weight
    from ..blockswap.checkpoint import load_network
    from ..blockswap.config import Configuration
    from ..blockswap.train import distill

    settings = _settings(args, beta=args.beta)
    config = Configuration.load(args.config)
    teacher, record = load_network(args.teacher, net=args.teacher_net or config.net, device=args.device)
    data, evals = _prepare(args, config.num_classes)
    stages = len({slot.stage for slot in config.spec.slots})
    print(f"distilling {config.net} ({config.params:,} parameters) from a {record['net']} teacher "
          f"({sum(p.numel() for p in teacher.parameters()):,} parameters), beta {settings.beta:g} "
          f"({at_weight(settings.beta, stages):g} per stage over {stages}), {settings.epochs} epochs, into {args.out}")
    print(_describe(settings, args.device))
    result = distill(config, teacher, data, settings, args.out, eval_sets=evals, device=args.device,
                     progress=not args.no_progress, on_epoch=_report, workers=_workers(args))
    return _finish(result, args, "distillation")


# -- the detector: train-detector, eval-detector ----------------------------------------------------------
def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected iteration counts separated by commas, e.g. 60000,80000; "
                                         f"got {text!r}") from None


def _add_detection_data_options(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA): reads "
                   "coco/annotations/instances_SPLIT.json with coco/SPLIT/, else the COCO sample")
    p.add_argument("--split", default=split, help=f"COCO split under the data root ({split})")
    p.add_argument("--annotations", default=None,
                   help="any COCO instances JSON instead of --data/--split (with --images)")
    p.add_argument("--images", default=None, help="the image folder of --annotations")


def _add_detector_parsers(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train-detector", help="train Mask R-CNN with a searched ResNet-34 backbone on COCO (the paper's schedule)",
        description="Train torchvision's Mask R-CNN over the configuration's BlockSwap ResNet-34 body and an FPN, "
                    "from scratch, with the BlockSwap paper's schedule (its Section 7: torchvision's default Mask "
                    "R-CNN settings, batch 16): SGD momentum 0.9, weight decay 1e-4, 16 images per step, lr 0.02 "
                    "with a linear warm-up over min(1000, an epoch) iterations from 0.001 x lr, 26 epochs, x0.1 "
                    "after epochs 16 and 22. --batch-size rescales it linearly (lr x B/16, the same epochs); "
                    "--iterations shortens it, keeping the steps at the same fractions. Resumable: rerun the same "
                    "command to continue from the last checkpoint.")
    t.add_argument("--config", required=True, help="backbone configuration (a 'search --dataset coco' winner file)")
    t.add_argument("--out", required=True,
                   help="output folder: checkpoint.pt, history.json/.csv, model.pt (and eval/ with --eval-split)")
    _add_detection_data_options(t, "train2017")
    t.add_argument("--iterations", type=int, default=None,
                   help="optimiser steps (default: the full schedule, 26 epochs of the annotated images)")
    t.add_argument("--batch-size", type=int, default=16, help="images per step (16)")
    t.add_argument("--lr", type=float, default=None, help="base learning rate (default: 0.02 x batch size / 16)")
    t.add_argument("--steps", type=_steps, default=None,
                   help="iterations after which the lr drops x0.1 (default: after epochs 16 and 22 of 26, or the "
                        "same fractions of --iterations)")
    t.add_argument("--warmup-iters", type=int, default=None,
                   help="linear warm-up from 0.001 x lr (default: min(1000, iterations per epoch - 1))")
    t.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay of every parameter (1e-4)")
    t.add_argument("--flip", type=float, default=0.5, help="probability of a horizontal flip (0.5)")
    t.add_argument("--min-size", type=int, default=800, help="shorter image side after resizing (800)")
    t.add_argument("--max-size", type=int, default=1333, help="longest image side after resizing (1333)")
    t.add_argument("--detector-option", action="append", default=[], metavar="NAME=VALUE",
                   help="a numeric MaskRCNN option, e.g. box_batch_size_per_image=128 or "
                        "rpn_post_nms_top_n_train=500 (smaller heads for quick runs); repeatable")
    t.add_argument("--seed", type=int, default=0, help="seed of the weights, batch order, flips and sampling (0)")
    t.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1...)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    t.add_argument("--workers", type=int, default=0, help="batch-loading processes (0: in the training process)")
    t.add_argument("--checkpoint-every", type=int, default=500, help="iterations between checkpoints (500)")
    t.add_argument("--log-every", type=int, default=20, help="iterations per history row (20)")
    t.add_argument("--eval-split", default=None,
                   help="evaluate the final detector on this split under --data (e.g. val2017) into OUT/eval/")
    t.add_argument("--eval-annotations", default=None, help="evaluate on this COCO JSON instead (with --eval-images)")
    t.add_argument("--eval-images", default=None, help="the image folder of --eval-annotations")
    t.add_argument("--eval-limit", type=int, default=None, help="evaluate the first N images only")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.set_defaults(func=run_train_detector)

    e = sub.add_parser(
        "eval-detector", help="COCO box and mask AP of a trained detector (pycocotools)",
        description="Run a 'train-detector' model over COCO images and evaluate its detections with pycocotools: "
                    "AP, AP50, AP75, APs, APm, APl for boxes (bbox) and masks (segm), written as metrics.json, "
                    "metrics.csv and metrics.md.")
    e.add_argument("--model", required=True, help="a train-detector output folder or its model.pt")
    e.add_argument("--out", required=True, help="output folder for metrics.json/.csv/.md")
    _add_detection_data_options(e, "val2017")
    e.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    e.add_argument("--min-size", type=int, default=None, help="shorter image side (default: the model's)")
    e.add_argument("--max-size", type=int, default=None, help="longest image side (default: the model's)")
    e.add_argument("--save-detections", action="store_true",
                   help="also write detections.json (COCO result format, masks as RLE)")
    e.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1...)")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    e.set_defaults(func=run_eval_detector)


def _detector_options(items: list[str]) -> dict[str, float]:
    from ..errors import ConfigError

    out: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            value = float(text)
            out[name.strip()] = int(value) if sep and value.is_integer() and "." not in text else value
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--detector-option {item!r}: expected NAME=NUMBER, e.g. box_batch_size_per_image=128")
    return out


def _print_metrics(evaluation: Any) -> None:
    from ..blockswap.coco_eval import metrics_markdown

    print(f"{evaluation.dataset}: {len(evaluation.image_ids)} images, {len(evaluation.results)} detections "
          f"[{evaluation.seconds:.1f} s]")
    print(metrics_markdown(evaluation.metrics), end="")


def _detector_log(row: dict) -> None:
    parts = [f"iteration {row['iteration']}", f"lr {row['lr']:.4g}", f"loss {row['loss']:.4f}"]
    parts += [f"{k[5:]} {row[k]:.3f}" for k in row if k.startswith("loss_")]
    print("  ".join(parts) + f"  [{row['seconds']:.1f} s]", flush=True)


def run_train_detector(args: argparse.Namespace) -> int:
    import torch

    from ..blockswap.config import Configuration
    from ..blockswap.detection import body_params
    from ..blockswap.detection_train import DetectionTrainSettings, open_detection_data, train_detector
    from ..runs.device import check_device

    device = check_device(args.device)
    config = Configuration.load(args.config)
    overrides = {k: v for k, v in (("steps", args.steps), ("warmup_iters", args.warmup_iters)) if v is not None}
    options = _detector_options(args.detector_option)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = open_detection_data(args.data, args.split, annotations=args.annotations, images=args.images)
    settings = DetectionTrainSettings.scaled(
        args.batch_size, args.iterations, args.lr, num_images=max(1, len(data.annotated())),
        weight_decay=args.weight_decay, bias_weight_decay=args.weight_decay, flip=args.flip,
        min_size=args.min_size, max_size=args.max_size, seed=args.seed, detector_options=options, **overrides)
    evals = None
    if args.eval_split or args.eval_annotations or args.eval_images:
        evals = open_detection_data(args.data, args.eval_split or "val2017", annotations=args.eval_annotations,
                                    images=args.eval_images)
    s = settings
    print(f"training Mask R-CNN with a {config.net} backbone ({body_params(config):,} body parameters, "
          f"{config.num_classes} classes) on {data.name} ({len(data.annotated()):,} annotated images): "
          f"{s.iterations:,} iterations of {s.batch_size} images, lr {s.lr:g} (warm-up {s.warmup_iters}), "
          f"x{s.gamma:g} after {', '.join(f'{v:,}' for v in s.steps)}; into {args.out}", flush=True)
    result = train_detector(config, data, settings, args.out, device=device, workers=args.workers,
                            checkpoint_every=args.checkpoint_every, log_every=args.log_every, eval_data=evals,
                            eval_limit=args.eval_limit, progress=not args.no_progress, on_log=_detector_log)
    if result.resumed_from:
        print(f"resumed after iteration {result.resumed_from} from {result.out}")
    print(f"training done: {s.iterations:,} iterations; detector in {result.out / 'model.pt'}, history in "
          f"{result.out / 'history.csv'}")
    if result.evaluation is not None:
        _print_metrics(result.evaluation)
        print(f"metrics in {result.out / 'eval'}")
    return 0


def run_eval_detector(args: argparse.Namespace) -> int:
    import torch

    from ..blockswap.coco_eval import evaluate_detector, write_evaluation
    from ..blockswap.config import Configuration
    from ..blockswap.detection_train import check_head, load_detector, open_detection_data
    from ..runs.device import check_device

    device = check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    detector, record = load_detector(args.model, device, min_size=args.min_size, max_size=args.max_size)
    data = open_detection_data(args.data, args.split, annotations=args.annotations, images=args.images)
    check_head(Configuration.create(record["net"], record["blocks"], record["num_classes"]), data)
    evaluation = evaluate_detector(detector, data, device=device, limit=args.limit, progress=not args.no_progress)
    evaluation.extra.update(model=str(args.model), iterations=record.get("iterations"),
                            min_size=detector.transform.min_size[0], max_size=detector.transform.max_size)
    write_evaluation(evaluation, args.out, detections=args.save_detections)
    _print_metrics(evaluation)
    print(f"metrics in {args.out}")
    return 0
