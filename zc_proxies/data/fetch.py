"""Downloading, unpacking and checking the data items of :mod:`.catalog`.

:func:`fetch` gets one item into its official place under the data root;
:func:`verify` checks what is there against the published checksums.

How a download goes (pooch does the verify-then-rename; the HTTP is requests, pooch's own dependency):

* The bytes stream into ``<root>/.zcbench-downloads/<file>.part``, with a
  tqdm progress bar. A connection that breaks off is resumed with an HTTP
  ``Range`` request (a few times within one fetch), and a ``.part`` left by
  an earlier, interrupted fetch is continued, not restarted (unless the
  server ignores ``Range``: then it starts over).
* The finished file is checked against its published checksum (and, for an
  item with none, its expected size when known). A mismatch deletes it and
  is an error naming the expected and the actual value.
* :func:`pooch.retrieve` then moves it into place: never a half file under
  its final name. Archives are unpacked (pooch's ``Untar`` / ``Unzip``) into
  a hidden staging folder beside the target, their files checked, and only
  then renamed into the official layout; the archive is deleted afterwards
  (``keep_archive`` keeps it in the download folder).

Everything a user can get wrong (no network, a bad mirror, a read-only data
root, a checksum mismatch) is a :class:`~zc_proxies.errors.DataError` of one
line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError, MissingDataError
from .catalog import (
    CACHE_DIR,
    ITEMS,
    MIRROR_ENV,
    PART_SUFFIX,
    Checksum,
    Download,
    Item,
    download_url,
    get_item,
    human_size,
    locate,
)

#: Connection attempts per fetch (each one resumes where the last one stopped).
ATTEMPTS = 4
#: Seconds to wait for a connection, and between bytes.
TIMEOUT = (15, 60)
_CHUNK = 1 << 16


class ChecksumError(DataError):
    """A downloaded or stored file does not match its published checksum."""


def _say_nothing(text: str) -> None:
    pass


def _progress_default(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


# -- hashing ---------------------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike, algorithm: str, *, progress: bool = False) -> str:
    """The hex digest of a file (``md5`` or ``sha256``), read in chunks."""
    from tqdm import tqdm

    path = Path(path)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, leave=False,
                                       desc=f"{algorithm} {path.name}", disable=not progress) as bar:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def check_file(path: Path, checksum: Checksum, what: str, *, progress: bool = False) -> None:
    """Raise :class:`ChecksumError` unless ``path`` matches ``checksum``."""
    got = file_digest(path, checksum.algorithm, progress=progress)
    if got != checksum.value:
        raise ChecksumError(f"checksum mismatch for {what}: expected {checksum.algorithm} {checksum.value}, "
                            f"got {got}")


def json_is_whole(path: Path) -> bool:
    """Whether a JSON file starts with ``[`` or ``{`` and ends with ``]`` or ``}`` (a cheap truncation check)."""
    size = path.stat().st_size
    if size < 2:
        return False
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip()
        fh.seek(max(0, size - 64))
        tail = fh.read().rstrip()
    return head[:1] in (b"[", b"{") and tail[-1:] in (b"]", b"}")


# -- the downloader --------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """A short reason for a requests exception ('[Errno 111] Connection refused', 'read timed out')."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if match:
        return match.group(0).strip().rstrip(",")
    for key in ("Connection refused", "timed out", "Name or service not known", "IncompleteRead",
                "Connection broken", "Connection aborted", "Connection reset"):
        if key.lower() in text.lower():
            return key
    return type(exc).__name__


class ResumableDownloader:
    """A pooch downloader that streams into a ``.part`` file and resumes it with HTTP ``Range`` requests.

    pooch calls it with the URL and a temporary file name beside the final
    one; the bytes go to ``partial`` (which survives an interrupted fetch),
    are checked, and only then replace pooch's temporary file (pooch moves
    that to the final name).

    Parameters
    ----------
    partial
        The ``.part`` file to write (and to continue, if it exists).
    checksum, size
        What the finished download must match (``size`` only checked when
        there is no checksum).
    name
        The item, for messages.
    progress
        Show a tqdm progress bar on stderr.
    say
        Where one-line notes go (a connection resumed).
    """

    def __init__(self, partial: Path, checksum: Checksum | None, size: int | None, *, name: str,
                 progress: bool = False, say: Callable[[str], None] = _say_nothing,
                 attempts: int | None = None) -> None:
        self.partial = Path(partial)
        self.checksum = checksum
        self.size = size
        self.name = name
        self.progress = progress
        self.say = say
        self.attempts = attempts or ATTEMPTS

    def __call__(self, url: str, output_file: str, pooch: object, check_only: bool = False) -> bool | None:
        import requests

        if check_only:
            try:
                return requests.head(url, timeout=TIMEOUT, allow_redirects=True).status_code == 200
            except requests.RequestException:
                return False
        for attempt in range(1, self.attempts + 1):
            try:
                if self._stream(url):
                    break
                problem = "the connection closed before the end of the file"
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                problem = _reason(exc)
            have = self.partial.stat().st_size if self.partial.exists() else 0
            if attempt == self.attempts:
                if have:
                    raise DataError(
                        f"download of {url} broke off {self.attempts} times ({problem}); the {human_size(have)} "
                        f"received are kept in {self.partial}, and `zcbench data fetch {self.name}` continues "
                        "from there")
                raise DataError(f"cannot download {url}: {problem} (no network? set {MIRROR_ENV} to a "
                                "reachable mirror)")
            self.say(f"{problem}; retrying{f' from byte {have:,}' if have else ''} "
                     f"(attempt {attempt + 1} of {self.attempts})")
            time.sleep(min(0.25 * attempt, 2.0))
        self._check(url)
        os.replace(self.partial, output_file)
        return None

    def _stream(self, url: str) -> bool:
        """One GET from where the ``.part`` file stops; True when the file is complete."""
        import requests
        from tqdm import tqdm

        have = self.partial.stat().st_size if self.partial.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
            if have and response.status_code == 416:  # nothing after `have`: complete, or the .part is too long
                total = _content_range_total(response.headers.get("Content-Range", ""))
                if total == have:
                    return True
                self.partial.unlink()
                self.say(f"{self.partial.name} does not fit the file on the server; starting over")
                return self._stream(url)
            if response.status_code >= 400:
                raise DataError(f"{url} answered HTTP {response.status_code} {response.reason}".rstrip())
            resumed = have and response.status_code == 206
            if have and not resumed:
                self.say("the server does not resume downloads (no HTTP Range support); starting over")
                have = 0
            if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                raise DataError(f"{url} answered a resumed download with Content-Range "
                                f"{response.headers.get('Content-Range')!r}, not from byte {have}")
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else self.size
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            with open(self.partial, "ab" if resumed else "wb") as fh, \
                    tqdm(total=total, initial=have, unit="B", unit_scale=True,
                         desc=self.partial.name[: -len(PART_SUFFIX)], disable=not self.progress) as bar:
                for chunk in response.iter_content(_CHUNK):
                    fh.write(chunk)
                    bar.update(len(chunk))
        return total is None or self.partial.stat().st_size >= total

    def _check(self, url: str) -> None:
        got_size = self.partial.stat().st_size
        what = f"{self.partial.name[: -len(PART_SUFFIX)]} from {url}"
        try:
            if self.checksum is not None:
                check_file(self.partial, self.checksum, what, progress=self.progress)
            elif self.size is not None and got_size != self.size:
                raise DataError(f"size mismatch for {what}: expected {self.size:,} bytes, got {got_size:,}")
        except DataError as exc:
            self.partial.unlink()
            raise type(exc)(f"{exc}; the download was discarded") from None


def _content_range_total(value: str) -> int | None:
    match = re.match(r"bytes [^/]*/(\d+)", value)
    return int(match.group(1)) if match else None


# -- fetch -----------------------------------------------------------------------------------------------


@dataclass
class FetchResult:
    """What :func:`fetch` did: ``action`` is ``"fetched"`` or ``"present"`` (already there and checked)."""

    item: Item
    action: str
    path: Path
    files: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    note: str = ""


def _ensure_writable(folder: Path, root: Path) -> None:
    """Create ``folder`` and write a probe file there; a read-only data root is a one-line error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".zcbench-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataError(f"cannot write to {folder} ({exc.strerror or exc}): the data root {root} is read-only "
                        "for this user; pass a writable --data DIR") from None


def _retrieve(item: Item, url: str, folder: Path, fname: str, partial: Path, *, progress: bool,
              say: Callable[[str], None]) -> Path:
    """Download ``url`` to ``folder/fname`` through pooch, checked, never half there under ``fname``."""
    import pooch
    import requests

    download = item.download
    assert download is not None
    downloader = ResumableDownloader(partial, download.checksum, download.size, name=item.name,
                                     progress=progress, say=say)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # pooch's own "Downloading ..." lines: we say what happens ourselves
    try:
        path = pooch.retrieve(url, known_hash=download.checksum.spec() if download.checksum else None,
                              fname=fname, path=folder, downloader=downloader)
    except DataError:
        raise
    except requests.RequestException as exc:
        raise DataError(f"cannot download {url}: {_reason(exc)}") from None
    except ValueError as exc:  # pooch's own hash check (after ours, so not expected)
        raise ChecksumError(f"checksum mismatch for {fname} from {url}: {' '.join(str(exc).split())}") from None
    except OSError as exc:
        raise DataError(f"cannot write {folder / fname}: {exc.strerror or exc}") from None
    finally:
        logger.setLevel(level)
    return Path(path)


def _check_layout(item: Item, folder: Path, *, progress: bool = False) -> list[str]:
    """Problems of the files of ``item``'s official layout in ``folder`` (missing, checksum mismatch)."""
    problems = []
    for member, checksum in item.checks:
        path = folder / member
        if not path.is_file():
            problems.append(f"{member} is missing")
            continue
        got = file_digest(path, checksum.algorithm, progress=progress)
        if got != checksum.value:
            problems.append(f"{member}: expected {checksum.algorithm} {checksum.value}, got {got}")
    return problems


def _safe_tar_members(archive: Path, top: str) -> None:
    """Refuse an archive with members outside ``top/``, links, or anything but files and folders."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for info in tar.getmembers():
                name = info.name
                parts = Path(name).parts
                if name.startswith("/") or ".." in parts or not parts or parts[0] != top:
                    raise DataError(f"{archive.name} holds {name!r}, outside {top}/; refusing to unpack it")
                if not (info.isfile() or info.isdir()):
                    raise DataError(f"{archive.name} holds {name!r}, which is not a plain file; refusing to "
                                    "unpack it")
    except tarfile.TarError as exc:
        raise DataError(f"{archive.name} is not a readable tar archive ({exc})") from None


def _swap_folder(staged: Path, target: Path) -> None:
    """Put ``staged`` at ``target``; an existing ``target`` is replaced whole (renames, then removal)."""
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        os.rename(target, old)
        try:
            os.rename(staged, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, target)


def fetch(name: str, root: str | os.PathLike, *, force: bool = False, keep_archive: bool = False,
          progress: bool | None = None, say: Callable[[str], None] = _say_nothing) -> FetchResult:
    """Download item ``name`` into its official place under the data root ``root``.

    An item already there and matching its checksums is left alone
    (``action == "present"``). One that is there but does not match is
    refused unless ``force`` (then it is replaced). For the NDS release,
    JSON files already there are kept unless ``force``; the others are added.

    Raises
    ------
    UnknownNameError
        For an unknown item (with the closest names).
    DataError
        For an item with no public URL, no network, an HTTP error, a
        checksum mismatch, a bad archive or a read-only data root.
    """
    item = get_item(name)
    if item.download is None:
        raise DataError(f"zcbench cannot fetch {item.name}: {item.fetch_note}; put it at "
                        f"<data root>/{item.target} (see data/README.md)")
    root = Path(root)
    if not root.is_dir():
        raise MissingDataError(f"data root {str(root)!r} is not a folder")
    progress = _progress_default(progress)
    kind = item.download.kind
    try:
        if kind == "file":
            return _fetch_file(item, root, force=force, progress=progress, say=say)
        if kind == "tar":
            return _fetch_tar(item, root, force=force, keep_archive=keep_archive, progress=progress, say=say)
        if kind == "zip":
            return _fetch_zip(item, root, force=force, keep_archive=keep_archive, progress=progress, say=say)
    finally:
        _tidy_cache(root)  # the download folder goes once nothing (no partial download) is left in it
    raise ConfigError(f"catalog item {item.name} has an unknown download kind {kind!r}")


def _cache(root: Path) -> Path:
    return root / CACHE_DIR


def _tidy_cache(root: Path) -> None:
    with contextlib.suppress(OSError):
        _cache(root).rmdir()  # only when empty


def _fetch_file(item: Item, root: Path, *, force: bool, progress: bool, say: Callable[[str], None]) -> FetchResult:
    download = item.download
    assert download is not None
    found = locate(item, root)
    if found.status == "present":
        problems = _check_layout(item, found.folder, progress=progress)
        if not problems:
            return FetchResult(item, "present", found.files[0], found.files,
                               note=f"already present and matching its {download.checksum.algorithm}"
                               if download.checksum else "already present")
        if not force:
            raise DataError(f"{found.files[0]} already exists but does not match ({problems[0]}); pass "
                            "--force to replace it")
    folder = found.folder if found.folder is not None else root / item.target
    _ensure_writable(folder, root)
    _ensure_writable(_cache(root), root)
    url = download_url(download)
    partial = _cache(root) / (download.filename + PART_SUFFIX)
    say(f"downloading {url}" + (f" (continuing {human_size(partial.stat().st_size)} already received)"
                                if partial.is_file() else ""))
    path = _retrieve(item, url, folder, download.filename, partial, progress=progress, say=say)
    return FetchResult(item, "fetched", path, [path], note=_checked_note(download))


def _checked_note(download: Download) -> str:
    if download.checksum is not None:
        return f"{download.checksum.algorithm} matches the published one"
    return "no published checksum to check against"


def _download_archive(item: Item, root: Path, *, progress: bool, say: Callable[[str], None]) -> Path:
    download = item.download
    assert download is not None
    cache = _cache(root)
    _ensure_writable(cache, root)
    url = download_url(download)
    partial = cache / (download.filename + PART_SUFFIX)
    archive = cache / download.filename
    if archive.is_file():
        say(f"using {archive} (downloaded earlier; checked again)")
    else:
        say(f"downloading {url}" + (f" (continuing {human_size(partial.stat().st_size)} already received)"
                                    if partial.is_file() else ""))
    return _retrieve(item, url, cache, download.filename, partial, progress=progress, say=say)


def _fetch_tar(item: Item, root: Path, *, force: bool, keep_archive: bool, progress: bool,
               say: Callable[[str], None]) -> FetchResult:
    import pooch

    download = item.download
    assert download is not None
    found = locate(item, root)
    target = found.folder if found.folder is not None else root / item.target
    if found.folder is not None:
        problems = _check_layout(item, found.folder, progress=progress) if item.checks else list(found.missing)
        if not problems:
            return FetchResult(item, "present", target, found.files,
                               note="already present, every file matching the published checksums")
        if not force:
            raise DataError(f"{target} already exists but is not the official {item.name} ({problems[0]}"
                            f"{f'; {len(problems) - 1} more problem(s)' if len(problems) > 1 else ''}); pass "
                            "--force to replace it")
    _ensure_writable(target.parent, root)
    archive = _download_archive(item, root, progress=progress, say=say)
    _safe_tar_members(archive, download.top)
    staging = target.parent / f".{target.name}.{os.getpid()}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        say(f"unpacking {archive.name}")
        try:
            pooch.Untar(members=[download.top], extract_dir=str(staging))(str(archive), "download", None)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"cannot unpack {archive.name}: {exc}") from None
        unpacked = staging / download.top
        problems = _check_layout(item, unpacked, progress=progress)
        if problems:
            raise ChecksumError(f"{archive.name} unpacked, but {problems[0]}"
                                f"{f' ({len(problems) - 1} more)' if len(problems) > 1 else ''}; nothing was "
                                "put in place")
        _swap_folder(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        archive.unlink()
    files = sorted(p for p in target.iterdir() if p.is_file())
    return FetchResult(item, "fetched", target, files,
                       note=f"{len(item.checks)} files matching the published checksums" if item.checks else "")


def _fetch_zip(item: Item, root: Path, *, force: bool, keep_archive: bool, progress: bool,
               say: Callable[[str], None]) -> FetchResult:
    import pooch

    target = root / item.target
    _ensure_writable(target, root)
    archive = _download_archive(item, root, progress=progress, say=say)
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist()
                     if n.endswith(".json") and not n.endswith("/") and not n.startswith("__MACOSX/")]
    except (zipfile.BadZipFile, OSError) as exc:
        archive.unlink(missing_ok=True)
        raise DataError(f"{archive.name} is not a readable zip archive ({exc}); it was discarded") from None
    if not names:
        raise DataError(f"{archive.name} holds no .json files; expected the NDS records (nds_data/*.json)")
    flat: dict[str, str] = {}
    for member in names:
        base = member.rsplit("/", 1)[-1]
        if base in flat:
            raise DataError(f"{archive.name} holds {base} twice ({flat[base]} and {member})")
        flat[base] = member
    staging = target / f".{os.getpid()}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    placed: list[Path] = []
    kept: list[Path] = []
    try:
        say(f"unpacking {len(names)} JSON files from {archive.name}")
        try:
            pooch.Unzip(members=names, extract_dir=str(staging))(str(archive), "download", None)
        except zipfile.BadZipFile as exc:  # a member whose CRC-32 does not match
            raise DataError(f"{archive.name} is damaged ({exc}); delete {archive} and fetch again") from None
        for member in sorted(flat.values()):
            if not json_is_whole(staging / member):
                raise DataError(f"{member} in {archive.name} is not a whole JSON file; nothing was put in place")
        for base, member in sorted(flat.items()):
            dest = target / base
            if dest.exists() and not force:
                kept.append(dest)
                continue
            os.replace(staging / member, dest)
            placed.append(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        archive.unlink()
    note = f"{len(placed)} JSON files put in place"
    if kept:
        note += f", {len(kept)} already there kept (--force replaces them)"
    return FetchResult(item, "fetched", target, placed, kept, note=f"{note}; {_checked_note(item.download)}")


# -- verify ----------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """The outcome of checking one item: ``status`` is ``"ok"``, ``"failed"``, ``"unchecked"`` or ``"missing"``."""

    item: Item
    status: str
    note: str = ""
    problems: list[str] = field(default_factory=list)


def verify_item(item: Item, root: str | os.PathLike, *, progress: bool | None = None) -> Verdict:
    """Check ``item`` under ``root`` against its published checksums (or, for NDS, whole-file checks)."""
    progress = _progress_default(progress)
    found = locate(item, root)
    if found.status == "missing":
        return Verdict(item, "missing", f"not under the data root (expected at {item.target})",
                       [f"not under the data root (expected at {item.target})"])
    if item.checks:
        problems = _check_layout(item, found.folder, progress=progress)
        if problems:
            return Verdict(item, "failed", problems=problems)
        checksum = item.checks[0][1]
        return Verdict(item, "ok", f"{len(item.checks)} file(s) match the published {checksum.algorithm} "
                                   f"({checksum.source})")
    if item.members and all(m.endswith(".json") for m in item.members):
        problems = [f"{p.relative_to(found.root).as_posix()} is not a whole JSON file (truncated or empty)"
                    for p in found.files if not json_is_whole(p)]
        if problems:
            return Verdict(item, "failed", problems=problems)
        return Verdict(item, "unchecked", f"{len(found.files)} JSON file(s) whole; no published checksums"
                                          + _absent(found.missing))
    return Verdict(item, "unchecked", "no published checksum: nothing to check against" + _absent(found.missing))


def _absent(missing: list[str]) -> str:
    if not missing:
        return ""
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return f" (not there: {shown})"


def verify(names: Sequence[str] | None, root: str | os.PathLike, *,
           progress: bool | None = None) -> list[Verdict]:
    """Check the named items (default: every item present, even in part) under ``root``.

    A named item that is missing is a problem; with no names, missing items are skipped.
    """
    root = Path(root)
    if names:
        items = [get_item(n) for n in dict.fromkeys(names)]
    else:
        items = [it for it in ITEMS.values() if locate(it, root).status != "missing"]
    return [verify_item(it, root, progress=progress) for it in items]
