"""Correlation tables from a score store: the numbers, then CSV, Markdown, LaTeX and a scatter plot.

:func:`summarise` turns store rows plus the space's stored accuracies into one
:class:`TableRow` per (proxy, split); the writers format those rows. Every
table says how many architectures were correlated and how many gave NaN or
failed, and its footnote names the minibatch images (and any stand-in), the
sign convention, the NaN policy and the bootstrap.

The plots live in :mod:`zc_proxies.plots` (``scatter_plot`` is importable from
here too), the table across many runs in :mod:`zc_proxies.leaderboard`.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, RunError
from .plots import scatter_plot
from .proxies.base import spec_of
from .proxies.population import with_population_scores
from .runs.atomic import atomic_write_text
from .runs.store import ERROR, OK
from .spaces import SearchSpace
from .stats import (
    MIN_N,
    CorrelationResult,
    DifferentArchitecturesWarning,
    SmallSampleWarning,
    check_nan_policy,
    correlation,
    regret,
    top_k_overlap,
)

__all__ = ["ReportContext", "Report", "TableRow", "make_report", "summarise", "to_text", "to_markdown", "to_csv",
           "to_latex", "write_reports", "scatter_plot", "footnotes", "comparison_notes", "warn_comparisons"]


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
    top_k: tuple[tuple[float, float], ...] = ()
    """``((percent, overlap), ...)``: :func:`~zc_proxies.stats.top_k_overlap` at each requested percent."""
    regret: float = math.nan
    """:func:`~zc_proxies.stats.regret`, in accuracy points."""
    nan_policy: str = "omit"
    indices: frozenset[int] = field(default=frozenset(), compare=False, repr=False)
    """The architectures correlated (``spearman.n`` of them)."""
    population: bool = False
    """Whether the scores are population-relative (a population proxy's aggregate, or one of its components)."""


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


def summarise(rows: Iterable[Mapping[str, Any]], space: SearchSpace,
              targets: Mapping[str, str] | Iterable[tuple[str, str]],
              proxies: Sequence[str], seed: int, indices: Sequence[int] | None = None, *,
              n_resamples: int = 1000, bootstrap_seed: int = 0, nan_policy: str = "omit",
              top_k: Sequence[float] = (10.0,)) -> list[TableRow]:
    """Correlate the stored scores of ``proxies`` (run seed ``seed``) with each target accuracy.

    ``targets`` is ``{split: dataset}`` or a sequence of ``(split, dataset)`` pairs.

    ``indices`` restricts the table to those architectures (one run's sample);
    architectures in it without a stored row are counted as ``n_missing``.
    ``nan_policy`` says what a NaN or failed score does (see :mod:`zc_proxies.stats`):
    ``"omit"`` (default) leaves it out, ``"worst"`` ranks it last. ``top_k``:
    percents for :attr:`TableRow.top_k` (``top10_overlap`` is always computed).
    """
    check_nan_policy(nan_policy)
    rows, proxies, population = with_population_scores(rows, proxies, seed, indices)
    percents = tuple(float(k) for k in top_k)
    pairs = list(targets.items()) if isinstance(targets, Mapping) else [(str(a), str(b)) for a, b in targets]
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
        spec = spec_of(proxy)
        stored = by_proxy[proxy]
        chosen = sorted(stored) if wanted is None else wanted
        present = [stored[i] for i in chosen if i in stored]
        n_missing = len(chosen) - len(present)
        ok = np.array([r["status"] == OK for r in present], dtype=bool)
        failed = np.array([r["status"] == ERROR for r in present], dtype=bool)
        index = np.array([int(r["index"]) for r in present], dtype=np.int64)
        versions = sorted({str(r.get("proxy_version")) for r in present}) or [spec.version]
        seconds = [float(r["seconds"]) for r in present if r["status"] == OK and r.get("seconds") is not None]
        # A nan/error row's score is NaN here; the policy (in stats) leaves it out or ranks it last.
        scores = np.array([float(r["score"]) if r["status"] == OK and r.get("score") is not None else math.nan
                           for r in present], dtype=np.float64)
        needed = ok if nan_policy == "omit" else np.ones(len(present), dtype=bool)
        for split, dataset in pairs:
            acc = np.array([accuracy(int(r["index"]), dataset, split) if need else math.nan
                            for r, need in zip(present, needed)], dtype=np.float64)
            kw = dict(higher_is_better=spec.higher_is_better, n_resamples=n_resamples, seed=bootstrap_seed,
                      nan_policy=nan_policy, failed=failed)
            rank = dict(higher_is_better=spec.higher_is_better, nan_policy=nan_policy)
            rho = correlation("spearman", scores, acc, **kw)
            kept = np.isfinite(acc) & (np.isfinite(scores) & ~failed if nan_policy == "omit" else True)
            table.append(TableRow(
                proxy=proxy, proxy_version=",".join(versions), higher_is_better=spec.higher_is_better,
                split=split, target=dataset,
                spearman=rho,
                kendall=correlation("kendall", scores, acc, **kw),
                top10_overlap=top_k_overlap(scores, acc, 0.1, **rank),
                n_archs=len(chosen), n_missing=n_missing,
                median_seconds=float(np.median(seconds)) if seconds else math.nan,
                n_no_accuracy=int((~np.isfinite(acc[needed])).sum()),
                top_k=tuple((k, top_k_overlap(scores, acc, k / 100.0, **rank)) for k in percents),
                regret=regret(scores, acc, **rank),
                nan_policy=nan_policy,
                indices=frozenset(index[kept].tolist()),
                population=proxy.split("[", 1)[0] in population,
            ))
    return table


# -- what a reader must know before comparing rows --------------------------------------------------------------


def comparison_notes(table: Sequence[TableRow], where: str = "") -> list[tuple[type[Warning], str]]:
    """``(warning class, sentence)`` for each caution a table needs.

    * proxies of one target correlated on different sets of architectures
      (NaN/failed scores left out under ``omit``, or rows not stored yet);
    * correlations over fewer than :data:`~zc_proxies.stats.MIN_N` architectures.

    ``where`` prefixes each sentence (a leaderboard names the run).
    """
    out: list[tuple[type[Warning], str]] = []
    prefix = f"{where}: " if where else ""
    splits = list(dict.fromkeys((r.split, r.target) for r in table))
    for split, target in splits:
        these = [r for r in table if (r.split, r.target) == (split, target)]
        sets = {r.indices for r in these}
        if len(sets) > 1:
            ns = sorted({r.spearman.n for r in these})
            common = frozenset.intersection(*sets)
            why = ("NaN/failed scores are left out (--nan-policy omit); --nan-policy worst compares all on the "
                   "same architectures" if these[0].nan_policy == "omit" else "some proxies lack stored scores")
            out.append((DifferentArchitecturesWarning,
                        f"{prefix}{split} ({target}): the proxies were correlated on different architecture sets "
                        f"(n from {ns[0]} to {ns[-1]}, {len(common)} architectures common to all): {why}."))
        small = [r for r in these if r.spearman.n < MIN_N]
        if small:
            listed = ", ".join(f"{r.proxy} (n={r.spearman.n})" for r in small)
            out.append((SmallSampleWarning,
                        f"{prefix}{split} ({target}): fewer than {MIN_N} architectures for {listed}; the 95% "
                        "intervals and top-k overlaps of so few architectures mean little."))
    return out


def warn_comparisons(notes: Iterable[tuple[type[Warning], str]], stacklevel: int = 2) -> None:
    """Issue each of :func:`comparison_notes`' cautions as a warning of its class."""
    for category, text in notes:
        warnings.warn(text, category, stacklevel=stacklevel + 1)


def policy_note(nan_policy: str, n_resamples: int) -> str:
    """The footnote saying what n, NaN/failed and the CI are under ``nan_policy``."""
    if nan_policy == "worst":
        what = ("NaN / failed = the proxy gave NaN/inf or raised: given the worst score (ranked last, tied with "
                "each other, as NAS-Bench-Suite-Zero does) and kept in n (--nan-policy worst)")
    else:
        what = ("NaN / failed = left out because the proxy gave NaN/inf or raised (--nan-policy omit), so "
                "proxies may be compared on different architectures")
    return f"n = architectures correlated; {what}; 95% CI = percentile bootstrap over {n_resamples} resamples."


# -- formatting -----------------------------------------------------------------------------------------------


def _f(x: float, digits: int = 3) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _ci(r: CorrelationResult) -> str:
    return f"[{_f(r.ci_low)}, {_f(r.ci_high)}]"


def setting_note(ctx: ReportContext, n: int, name: str | None = None) -> str:
    """The footnote naming the space, the seed and the minibatch (``name`` defaults to the spec)."""
    classes = f" ({ctx.num_classes} classes)" if ctx.num_classes else ""
    if ctx.batch_size is None:  # scores made elsewhere (an imported score file): no minibatch is known
        batch = f"scores from {ctx.data_source}, minibatch not recorded."
    else:
        batch = (f"one {'class-balanced ' if ctx.sampling == 'balanced' else ''}minibatch of {ctx.batch_size} "
                 f"{ctx.data_source} images per architecture{' with training augmentation' if ctx.augment else ''}.")
    return (f"{name or ctx.spec}: {n} architectures of space {ctx.space}, networks built for {ctx.dataset}{classes}, "
            f"seed {ctx.seed}; {batch}")


def footnotes(ctx: ReportContext, table: Sequence[TableRow]) -> list[str]:
    """The lines under a table: data, stand-in, targets, sign, NaN policy, bootstrap, cautions."""
    notes = [setting_note(ctx, max((r.n_archs for r in table), default=0))]
    if ctx.stand_in_for:
        notes.append(f"STAND-IN DATA: {ctx.data_source} images stand in for {ctx.stand_in_for}; {ctx.source_note}.")
    for split, dataset in ctx.targets:
        notes.append(f"{split} = {ctx.target_notes.get(split) or f'{dataset} {split} accuracy'}.")
    relative = sorted({r.proxy for r in table if r.population and "[" not in r.proxy})
    if relative:
        notes.append(f"Population-relative: {', '.join(relative)} rank(s) each architecture against the others "
                     "correlated here (the proxy's declared aggregation of its stored components, computed at "
                     "report time); proxy[component] rows are those components.")
    lower = sorted({r.proxy for r in table if not r.higher_is_better})
    notes.append("Sign: correlations use scores oriented so that higher = predicted better"
                 + (f"; lower-is-better proxies negated: {', '.join(lower)}." if lower else "."))
    policy = table[0].nan_policy if table else "omit"
    notes.append(policy_note(policy, ctx.n_resamples)[:-1] + "; top-10% = share of the truly best 10% that the "
                 "proxy also ranks in its best 10%.")
    missing = sum(r.n_missing for r in table if r.split == ctx.targets[0][0]) if ctx.targets else 0
    if missing:
        notes.append(f"{missing} (architecture, proxy) scores are not in the store yet (unfinished run or shard).")
    no_acc = sorted({(r.split, r.target, r.n_no_accuracy) for r in table if r.n_no_accuracy})
    for split, target, k in no_acc:
        notes.append(f"{k} scored architectures have no stored {target} {split} accuracy and are left out of n.")
    notes += [text for _, text in comparison_notes(table)]
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
                plot: bool = True, nan_policy: str = "omit") -> Report:
    """Correlate stored ``rows`` and write CSV, Markdown, LaTeX (and the scatter PNG) under ``out_dir``."""
    table = summarise(rows, space, dict(ctx.targets), proxies, ctx.seed, indices, n_resamples=ctx.n_resamples,
                      nan_policy=nan_policy)
    try:
        paths = write_reports(out_dir, table, ctx, stem=stem)
        if plot:
            name = stem.replace("correlations", "scatter", 1) if "correlations" in stem else f"{stem}-scatter"
            scored, shown, _ = with_population_scores(rows, proxies, ctx.seed, indices)
            paths["png"] = scatter_plot(Path(out_dir) / f"{name}.png", scored, space, ctx, table, shown, indices)
    except OSError as exc:
        raise RunError(f"cannot write the report under {str(out_dir)!r} ({exc.strerror or exc}); the scores are "
                       "stored: fix the cause and rerun to write it") from exc
    return Report(table, to_text(table, ctx), paths)
