"""Correlation tables from a score store: the numbers, then CSV, Markdown, LaTeX and a scatter plot.

:func:`summarise` turns store rows plus the space's stored accuracies into one
:class:`TableRow` per (proxy, split); the writers format those rows. Every
table says how many architectures were correlated and how many gave NaN or
failed, and its footnote names the minibatch images (and any stand-in), the
sign convention and the bootstrap.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, RunError
from .proxies import get_proxy
from .runs.atomic import atomic_open, atomic_write_text
from .runs.store import ERROR, NAN, OK
from .spaces import SearchSpace
from .stats import CorrelationResult, correlation, top_k_overlap


@dataclass(frozen=True)
class TableRow:
    """The correlations of one proxy with one accuracy target."""

    proxy: str
    proxy_version: str
    higher_is_better: bool
    split: str
    target: str
    spearman: CorrelationResult
    kendall: CorrelationResult
    top10_overlap: float
    n_archs: int
    n_missing: int
    median_seconds: float
    n_no_accuracy: int = 0


@dataclass(frozen=True)
class ReportContext:
    """Settings a table was made under, for its footnote."""

    spec: str
    space: str
    dataset: str
    num_classes: int | None
    batch_size: int | None
    seed: int
    augment: bool | None
    data_source: str
    stand_in_for: str | None
    source_note: str
    targets: tuple[tuple[str, str], ...]
    n_resamples: int = 1000
    extra_notes: tuple[str, ...] = field(default=())
    sampling: str = "uniform"
    target_notes: Mapping[str, str] = field(default_factory=dict)
    """``{split: what that split's accuracy is}``, as the space describes its targets."""


def summarise(rows: Iterable[Mapping[str, Any]], space: SearchSpace, targets: Mapping[str, str],
              proxies: Sequence[str], seed: int, indices: Sequence[int] | None = None, *,
              n_resamples: int = 1000, bootstrap_seed: int = 0) -> list[TableRow]:
    """Correlate the stored scores of ``proxies`` (run seed ``seed``) with each target accuracy.

    ``indices`` restricts the table to those architectures (one run's sample);
    architectures in it without a stored row are counted as ``n_missing``.
    """
    by_proxy: dict[str, dict[int, Mapping[str, Any]]] = {p: {} for p in proxies}
    for r in rows:
        if r["proxy"] in by_proxy and int(r["seed"]) == int(seed):
            by_proxy[r["proxy"]][int(r["index"])] = r
    wanted = None if indices is None else [int(i) for i in indices]
    acc_cache: dict[tuple[int, str, str], float] = {}

    def accuracy(i: int, dataset: str, split: str) -> float:
        key = (i, dataset, split)
        if key not in acc_cache:
            try:
                acc_cache[key] = float(space.accuracy(i, dataset, split))
            except DataError:  # this arch has no stored accuracy for the target: left out, and counted
                acc_cache[key] = math.nan
        return acc_cache[key]

    table = []
    for proxy in proxies:
        spec = get_proxy(proxy).spec
        stored = by_proxy[proxy]
        chosen = sorted(stored) if wanted is None else wanted
        present = [stored[i] for i in chosen if i in stored]
        n_missing = len(chosen) - len(present)
        ok = [r for r in present if r["status"] == OK]
        n_nan = sum(r["status"] == NAN for r in present)
        n_error = sum(r["status"] == ERROR for r in present)
        versions = sorted({str(r.get("proxy_version")) for r in present}) or [spec.version]
        seconds = [float(r["seconds"]) for r in ok if r.get("seconds") is not None]
        scores = np.array([float(r["score"]) for r in ok], dtype=np.float64)
        for split, dataset in targets.items():
            acc = np.array([accuracy(int(r["index"]), dataset, split) for r in ok], dtype=np.float64)
            kw = dict(higher_is_better=spec.higher_is_better, n_nan=n_nan, n_error=n_error,
                      n_resamples=n_resamples, seed=bootstrap_seed)
            table.append(TableRow(
                proxy=proxy, proxy_version=",".join(versions), higher_is_better=spec.higher_is_better,
                split=split, target=dataset,
                spearman=correlation("spearman", scores, acc, **kw),
                kendall=correlation("kendall", scores, acc, **kw),
                top10_overlap=top_k_overlap(scores, acc, 0.1, higher_is_better=spec.higher_is_better),
                n_archs=len(chosen), n_missing=n_missing,
                median_seconds=float(np.median(seconds)) if seconds else math.nan,
                n_no_accuracy=int((~np.isfinite(acc)).sum()),
            ))
    return table


# -- formatting -----------------------------------------------------------------------------------------------


def _f(x: float, digits: int = 3) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _ci(r: CorrelationResult) -> str:
    return f"[{_f(r.ci_low)}, {_f(r.ci_high)}]"


def footnotes(ctx: ReportContext, table: Sequence[TableRow]) -> list[str]:
    """The lines under a table: data, stand-in, targets, sign, bootstrap."""
    n = max((r.n_archs for r in table), default=0)
    classes = f" ({ctx.num_classes} classes)" if ctx.num_classes else ""
    if ctx.batch_size is None:  # scores made elsewhere (an imported score file): no minibatch is known
        batch = f"scores from {ctx.data_source}, minibatch not recorded."
    else:
        batch = (f"one {'class-balanced ' if ctx.sampling == 'balanced' else ''}minibatch of {ctx.batch_size} "
                 f"{ctx.data_source} images per architecture{' with training augmentation' if ctx.augment else ''}.")
    notes = [f"{ctx.spec}: {n} architectures of space {ctx.space}, networks built for {ctx.dataset}{classes}, "
             f"seed {ctx.seed}; {batch}"]
    if ctx.stand_in_for:
        notes.append(f"STAND-IN DATA: {ctx.data_source} images stand in for {ctx.stand_in_for}; {ctx.source_note}.")
    for split, dataset in ctx.targets:
        notes.append(f"{split} = {ctx.target_notes.get(split) or f'{dataset} {split} accuracy'}.")
    lower = sorted({r.proxy for r in table if not r.higher_is_better})
    notes.append("Sign: correlations use scores oriented so that higher = predicted better"
                 + (f"; lower-is-better proxies negated: {', '.join(lower)}." if lower else "."))
    notes.append(f"n = architectures correlated; NaN / failed = left out because the proxy gave NaN/inf or "
                 f"raised; 95% CI = percentile bootstrap over {ctx.n_resamples} resamples; top-10% = share of "
                 "the truly best 10% that the proxy also ranks in its best 10%.")
    missing = sum(r.n_missing for r in table if r.split == ctx.targets[0][0]) if ctx.targets else 0
    if missing:
        notes.append(f"{missing} (architecture, proxy) scores are not in the store yet (unfinished run or shard).")
    no_acc = sorted({(r.split, r.target, r.n_no_accuracy) for r in table if r.n_no_accuracy})
    for split, target, k in no_acc:
        notes.append(f"{k} scored architectures have no stored {target} {split} accuracy and are left out of n.")
    notes.extend(ctx.extra_notes)
    return notes


HEADER = ("proxy", "target", "n", "NaN", "failed", "Spearman", "95% CI", "Kendall", "95% CI", "top-10%")


def _cells(r: TableRow) -> tuple[str, ...]:
    return (r.proxy, f"{r.split} ({r.target})", str(r.spearman.n), str(r.spearman.n_nan), str(r.spearman.n_error),
            _f(r.spearman.statistic), _ci(r.spearman), _f(r.kendall.statistic), _ci(r.kendall), _f(r.top10_overlap, 2))


def to_markdown(table: Sequence[TableRow], ctx: ReportContext) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in table]
    lines.append("")
    lines += [f"{i}. {note}" for i, note in enumerate(footnotes(ctx, table), start=1)]
    return "\n".join(lines) + "\n"


def to_text(table: Sequence[TableRow], ctx: ReportContext) -> str:
    """A fixed-width table for the terminal, with the footnotes."""
    rows = [HEADER] + [_cells(r) for r in table]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.append("")
    out += [f"[{i}] {note}" for i, note in enumerate(footnotes(ctx, table), start=1)]
    return "\n".join(out) + "\n"


CSV_FIELDS = ("spec", "space", "dataset", "proxy", "proxy_version", "higher_is_better", "split", "target",
              "n", "n_nan", "n_error", "n_missing", "n_no_accuracy", "n_archs",
              "spearman", "spearman_pvalue", "spearman_ci_low", "spearman_ci_high",
              "kendall", "kendall_pvalue", "kendall_ci_low", "kendall_ci_high", "top10_overlap",
              "median_seconds", "batch_size", "seed", "data_source", "stand_in_for")


def to_csv(table: Sequence[TableRow], ctx: ReportContext) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in table:
        writer.writerow({
            "spec": ctx.spec, "space": ctx.space, "dataset": ctx.dataset, "proxy": r.proxy,
            "proxy_version": r.proxy_version, "higher_is_better": r.higher_is_better, "split": r.split,
            "target": r.target, "n": r.spearman.n, "n_nan": r.spearman.n_nan, "n_error": r.spearman.n_error,
            "n_missing": r.n_missing, "n_no_accuracy": r.n_no_accuracy, "n_archs": r.n_archs,
            "spearman": r.spearman.statistic, "spearman_pvalue": r.spearman.pvalue,
            "spearman_ci_low": r.spearman.ci_low, "spearman_ci_high": r.spearman.ci_high,
            "kendall": r.kendall.statistic, "kendall_pvalue": r.kendall.pvalue,
            "kendall_ci_low": r.kendall.ci_low, "kendall_ci_high": r.kendall.ci_high,
            "top10_overlap": r.top10_overlap, "median_seconds": r.median_seconds,
            "batch_size": ctx.batch_size, "seed": ctx.seed, "data_source": ctx.data_source,
            "stand_in_for": ctx.stand_in_for or "",
        })
    return buf.getvalue()


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        text = text.replace(a, b) if a != "\\" else text.replace(a, "\0")
    return text.replace("\0", r"\textbackslash{}")


def to_latex(table: Sequence[TableRow], ctx: ReportContext) -> str:
    """A booktabs ``tabular`` with the footnotes as a small paragraph below."""
    head = ("Proxy", "Target", "$n$", "NaN", "Failed", r"Spearman $\rho$ [95\% CI]", r"Kendall $\tau$ [95\% CI]",
            r"Top-10\%")
    lines = [r"\begin{tabular}{llrrrccr}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for r in table:
        cells = (_tex(r.proxy), _tex(f"{r.split} ({r.target})"), str(r.spearman.n), str(r.spearman.n_nan),
                 str(r.spearman.n_error), f"{_f(r.spearman.statistic)} {_ci(r.spearman)}",
                 f"{_f(r.kendall.statistic)} {_ci(r.kendall)}", _f(r.top10_overlap, 2))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "", r"\par\footnotesize"]
    lines += [f"({i}) {_tex(note)}" + r"\\" for i, note in enumerate(footnotes(ctx, table), start=1)]
    return "\n".join(lines) + "\n"


def scatter_plot(path: str | Path, rows: Iterable[Mapping[str, Any]], space: SearchSpace, ctx: ReportContext,
                 table: Sequence[TableRow], proxies: Sequence[str], indices: Sequence[int] | None = None) -> Path:
    """A PNG with one panel per proxy: stored score against the first target's accuracy."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    split, dataset = ctx.targets[0]
    wanted = None if indices is None else set(int(i) for i in indices)
    stats = {(r.proxy, r.split): r for r in table}
    cols = min(3, max(1, len(proxies)))
    nrows = math.ceil(len(proxies) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    rows = list(rows)
    for ax, proxy in zip(axes.flat, proxies):
        pts = [(float(r["score"]), float(space.accuracy(int(r["index"]), dataset, split))) for r in rows
               if r["proxy"] == proxy and int(r["seed"]) == ctx.seed and r["status"] == OK
               and (wanted is None or int(r["index"]) in wanted)]
        if pts:
            x, y = np.array(pts).T
            ax.scatter(x, y, s=6, alpha=0.5, linewidths=0)
            if np.all(x > 0) and x.max() / max(x.min(), 1e-300) > 100:
                ax.set_xscale("log")
        res = stats.get((proxy, split))
        rho = _f(res.spearman.statistic) if res else "nan"
        ax.set_title(f"{proxy}: Spearman {rho} (n={res.spearman.n if res else 0})", fontsize=9)
        ax.set_xlabel(f"{proxy} score" + ("" if get_proxy(proxy).spec.higher_is_better else " (lower = better)"),
                      fontsize=8)
        ax.set_ylabel(f"{split} accuracy, {dataset} (%)", fontsize=8)
    for ax in list(axes.flat)[len(proxies):]:
        ax.axis("off")
    title = f"{ctx.spec}, batch {ctx.batch_size}, {ctx.data_source}"
    if ctx.stand_in_for:
        title += f" (STAND-IN for {ctx.stand_in_for})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, dpi=120, format="png")
    finally:
        plt.close(fig)
    return path


def write_reports(out_dir: str | Path, table: Sequence[TableRow], ctx: ReportContext, *,
                  stem: str = "correlations") -> dict[str, Path]:
    """Write ``<stem>.csv``, ``.md`` and ``.tex`` under ``out_dir`` (each whole or not at all); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {ext: atomic_write_text(out / f"{stem}.{ext}", fn(table, ctx))
            for ext, fn in (("csv", to_csv), ("md", to_markdown), ("tex", to_latex))}


@dataclass
class Report:
    """A written correlation report: its rows, the terminal text, and the files."""

    table: list[TableRow]
    text: str
    paths: dict[str, Path]


def make_report(out_dir: str | Path, stem: str, rows: Sequence[Mapping[str, Any]], space: SearchSpace,
                ctx: ReportContext, proxies: Sequence[str], indices: Sequence[int] | None, *,
                plot: bool = True) -> Report:
    """Correlate stored ``rows`` and write CSV, Markdown, LaTeX (and the scatter PNG) under ``out_dir``."""
    table = summarise(rows, space, dict(ctx.targets), proxies, ctx.seed, indices, n_resamples=ctx.n_resamples)
    try:
        paths = write_reports(out_dir, table, ctx, stem=stem)
        if plot:
            name = stem.replace("correlations", "scatter", 1) if "correlations" in stem else f"{stem}-scatter"
            paths["png"] = scatter_plot(Path(out_dir) / f"{name}.png", rows, space, ctx, table, proxies, indices)
    except OSError as exc:
        raise RunError(f"cannot write the report under {str(out_dir)!r} ({exc.strerror or exc}); the scores are "
                       "stored: fix the cause and rerun to write it") from exc
    return Report(table, to_text(table, ctx), paths)
