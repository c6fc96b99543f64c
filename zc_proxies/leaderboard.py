"""One leaderboard across runs: every proxy against every space and target found in a set of result stores.

:func:`build_leaderboard` reads result stores (files, or folders searched for
``scores*.jsonl``), skips what holds no proxy scores (BlockSwap candidate
stores, keyed by ``index``; empty stores), and groups the rest into *runs*:

* stores of one experiment (the same space spec and settings, as
  :func:`zc_proxies.runs.merge.check_same_experiment` decides, which also
  refuses conflicting results or proxy versions) are pooled like a merge, so
  the shards of a run make one run;
* each run seed is its own run (``--seed`` keeps one);
* runs of one space under different settings stay separate, labelled by what
  differs (``nb201-cifar10 [batch 64]`` beside ``nb201-cifar10 [batch 256]``).

Each run is correlated by :func:`zc_proxies.report.summarise` (the same code
as ``zcbench eval``'s tables) against its spec's targets, and the table is
one block per (run, target), proxies sorted by |Spearman rho| within it, with
Kendall's tau, bootstrap intervals, counts, top-k overlaps and regret
(:func:`zc_proxies.stats.regret`). Writers: CSV (long format: one line per
run, target and proxy), Markdown, LaTeX (a plain ``tabular``, no package
needed), terminal text; PNG bar charts and scatter grids come from
:mod:`zc_proxies.plots`.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError, RunError, UnknownNameError, ZCBenchError
from .proxies import get_proxy
from .proxies.population import with_population_scores
from .report import (
    ReportContext,
    TableRow,
    _tex,
    comparison_notes,
    policy_note,
    setting_note,
    summarise,
    warn_comparisons,
)
from .runs.atomic import atomic_write_text
from .runs.merge import StoreFile, check_same_experiment, expand, load_stores, missing_shards
from .runs.store import SCORE_KEY, SETTING_DEFAULTS, key_of, settings_difference
from .spaces import SearchSpace
from .stats import NAN_POLICIES, CorrelationResult, check_nan_policy

DEFAULT_TOP_K = (5.0, 10.0, 20.0)


# -- finding and grouping stores ------------------------------------------------------------------------------
def spec_of(store: StoreFile) -> str:
    """The space spec a store was made for: its header's ``info.spec``, else ``SPACE-DATASET``."""
    info = store.header.get("info") or {}
    settings = store.settings
    return str(info.get("spec") or f"{settings.get('space')}-{settings.get('dataset')}")


def flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Settings as ``{dotted name: value}``, with :data:`SETTING_DEFAULTS` for settings a store predates."""
    out: dict[str, Any] = {}
    if not prefix:
        settings = {**SETTING_DEFAULTS, **settings}
    for name, value in settings.items():
        if isinstance(value, dict):
            out.update(flat_settings(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _describe(name: str, value: Any) -> str:
    if name == "batch_size":
        return "batch n/a" if value is None else f"batch {value}"
    if name == "data_source":
        return f"data {value}"
    if name == "augment":
        return "augment n/a" if value is None else ("augment" if value else "no augment")
    if name == "sampling":
        return f"{value} sampling"
    if name == "stand_in_for":
        return f"stand-in for {value}" if value else "no stand-in"
    if name == "seed":
        return f"seed {value}"
    return f"{name}={value}"


_LABEL_ORDER = ("batch_size", "data_source", "stand_in_for", "augment", "sampling")


@dataclass
class Experiment:
    """Stores of one space spec under one set of settings, pooled."""

    spec: str
    settings: dict[str, Any]
    stores: list[StoreFile] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.stores]

    def targets(self) -> list[str]:
        """The target names the stores' headers record (``info.targets``), each once: val ones, test ones, others.

        (A header's keys are stored sorted, so the order they were given in is not known.)
        """
        names: set[str] = set()
        for store in self.stores:
            names.update(str(t) for t in (store.header.get("info") or {}).get("targets") or {})
        order = {"val": 0, "valid": 0, "test": 1}
        return sorted(names, key=lambda n: (order.get(n.split("-")[0], 2), n))

    def rows(self) -> list[dict]:
        """Every stored row once (a key held by two stores holds the same result: checked)."""
        pooled: dict[tuple, dict] = {}
        for store in self.stores:
            for row in store.rows:
                pooled.setdefault(key_of(row, SCORE_KEY), row)
        return [pooled[k] for k in sorted(pooled, key=lambda k: (k[2], k[1], k[0]))]


def group_stores(stores: Sequence[StoreFile]) -> tuple[list[Experiment], list[str]]:
    """Experiments of the score stores among ``stores``, and a note for each store skipped."""
    skipped: list[str] = []
    groups: list[Experiment] = []
    for store in stores:
        if store.key != tuple(SCORE_KEY):
            kind = ("BlockSwap search candidates" if store.key == ("index",)
                    else f"results keyed by {', '.join(store.key)}")
            skipped.append(f"{store.path}: {kind}, not proxy scores of architectures; skipped.")
            continue
        if not store.rows:
            skipped.append(f"{store.path}: no rows stored yet; skipped.")
            continue
        spec = spec_of(store)
        for group in groups:
            if group.spec == spec and not settings_difference(group.settings, store.settings):
                group.stores.append(store)
                break
        else:
            groups.append(Experiment(spec, store.settings, [store]))
    for group in groups:
        check_same_experiment(group.stores)  # one experiment: no conflicting results or proxy versions
    return groups, skipped


# -- the leaderboard ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One column group of the leaderboard: one experiment's pooled rows of one run seed."""

    label: str
    experiment: Experiment
    seed: int
    space: SearchSpace
    context: ReportContext
    proxies: list[str]
    table: list[TableRow]
    notes: list[str] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return self.experiment.spec

    @property
    def settings(self) -> dict[str, Any]:
        return self.experiment.settings


@dataclass
class Block:
    """One space/target of the leaderboard: its proxies sorted by |Spearman rho| (undefined last)."""

    run: Run
    split: str
    target: str
    note: str
    rows: list[TableRow]

    @property
    def title(self) -> str:
        return f"{self.run.label}: {self.split} ({self.target})"


def rank_key(row: TableRow) -> tuple[float, str]:
    """Sort key of a leaderboard block: larger |rho| first, undefined rho last, then the proxy's name."""
    rho = row.spearman.statistic
    return (-abs(rho) if math.isfinite(rho) else math.inf, row.proxy)


@dataclass
class Leaderboard:
    """Every proxy against every space/target found, with the notes the numbers need."""

    runs: list[Run]
    blocks: list[Block]
    nan_policy: str
    top_k: tuple[float, ...]
    n_resamples: int
    skipped: list[str] = field(default_factory=list)
    cautions: list[tuple[type[Warning], str]] = field(default_factory=list)

    def notes(self) -> list[str]:
        """The footnotes: runs and their data, targets, sign, policy, measures, cautions, skipped stores."""
        notes: list[str] = []
        for run in self.runs:
            n = max((r.n_archs for r in run.table), default=0)
            stores = len(run.experiment.stores)
            notes.append(setting_note(run.context, n, run.label).rstrip(".")
                         + f"; {stores} store{'s' if stores != 1 else ''} pooled.")
            if run.context.stand_in_for:
                notes.append(f"{run.label}: STAND-IN DATA: {run.context.data_source} images stand in for "
                             f"{run.context.stand_in_for}; {run.context.source_note}.")
            notes.extend(run.notes)
        targets = dict.fromkeys(f"{b.run.spec} {b.split} ({b.target}) = {b.note}." for b in self.blocks)
        notes.extend(targets)
        lower = sorted({r.proxy for b in self.blocks for r in b.rows if not r.higher_is_better})
        notes.append("Sign: correlations use scores oriented so that higher = predicted better"
                     + (f"; lower-is-better proxies negated: {', '.join(lower)}." if lower else "."))
        notes.append(policy_note(self.nan_policy, self.n_resamples))
        notes.append("Rows are sorted by |Spearman \u03c1| within each space/target (undefined \u03c1 last); "
                     "# is that rank.")
        ks = ", ".join(_pct(k) for k in self.top_k)
        notes.append(f"top-k% (k = {ks}) = share of the truly best k% of the n architectures (by accuracy) that the "
                     "proxy also ranks in its best k%, with k% of n rounded and at least 1 architecture; ties "
                     "broken by architecture index.")
        worst = ("a NaN/failed architecture is in the sample but ranked last, so never picked unless every score is "
                 "NaN" if self.nan_policy == "worst" else
                 "NaN/failed architectures are not in the sample (neither pickable nor the best)")
        notes.append("regret = best accuracy among the n architectures minus the accuracy of the architecture the "
                     "proxy scores best, in accuracy points (0 = the proxy's top pick is the best); architectures "
                     f"tied at the best score count with their mean accuracy; {worst}.")
        notes.extend(text for _, text in self.cautions)
        notes.extend(self.skipped)
        return notes


def parse_top_k(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"5,10,20"`` -> ``(5.0, 10.0, 20.0)``; each a percent in (0, 100]; a ConfigError otherwise."""
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    out = []
    for item in items:
        if item == "":
            continue
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"--top-k takes percents separated by commas, e.g. 5,10,20; got {text!r}") from None
        if not 0 < value <= 100:
            raise ConfigError(f"--top-k: {item} is not a percent in (0, 100]")
        out.append(value)
    if not out:
        raise ConfigError("--top-k names no percent")
    return tuple(dict.fromkeys(out))


def _pct(k: float) -> str:
    return f"{k:g}"


def _labels(runs: list[tuple[Experiment, int]]) -> list[str]:
    """A label per (experiment, seed): its spec, plus what differs from the other runs of that spec."""
    labels = []
    for exp, seed in runs:
        same = [(e, s) for e, s in runs if e.spec == exp.spec]
        if len(same) == 1:
            labels.append(exp.spec)
            continue
        mine = {**flat_settings(exp.settings), "seed": seed}
        others = [{**flat_settings(e.settings), "seed": s} for e, s in same]
        varying = [k for k in dict.fromkeys(k for o in others for k in o) if len({repr(o.get(k)) for o in others}) > 1]
        varying.sort(key=lambda k: (_LABEL_ORDER.index(k) if k in _LABEL_ORDER else len(_LABEL_ORDER),
                                    k == "seed", k))
        labels.append(f"{exp.spec} [{', '.join(_describe(k, mine.get(k)) for k in varying)}]")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # never two columns of one name
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    return labels


def build_leaderboard(paths: Iterable[str | os.PathLike], *, data: str | None = None, n_resamples: int = 1000,
                      nan_policy: str = "omit", top_k: Sequence[float] | str = DEFAULT_TOP_K,
                      seed: int | None = None, bootstrap_seed: int = 0, warn: bool = True) -> Leaderboard:
    """Read, check, pool and correlate every store under ``paths``; nothing is written.

    ``seed`` keeps only that run seed (imported NAS-Bench-Suite-Zero scores have
    seed -1); by default each seed found is its own run. Cautions (proxies
    compared on different architectures, fewer than 30 of them) become
    footnotes and, with ``warn``, warnings of their
    :class:`~zc_proxies.stats.ComparisonWarning` class.
    """
    from .runs.evaluation import positive, prepare_report

    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"--nan-policy must be one of {', '.join(NAN_POLICIES)}, got {nan_policy!r}")
    check_nan_policy(nan_policy)
    positive(n_resamples, "--bootstrap")
    percents = parse_top_k(top_k)
    stores = load_stores(expand(paths, recursive=True))
    experiments, skipped = group_stores(stores)

    wanted: list[tuple[Experiment, int]] = []
    for exp in experiments:
        seeds = sorted({int(r["seed"]) for s in exp.stores for r in s.rows})
        if seed is None:
            wanted += [(exp, s) for s in seeds]
        elif seed in seeds:
            wanted.append((exp, seed))
        else:
            skipped.append(f"{', '.join(map(str, exp.paths))}: no rows of --seed {seed} (holds seed(s) "
                           f"{', '.join(map(str, seeds))}); skipped.")
    if not wanted:
        raise DataError("none of the stores holds proxy scores to correlate"
                        + (f" of seed {seed}" if seed is not None else "")
                        + (": " + " ".join(skipped) if skipped else ""))

    runs: list[Run] = []
    for (exp, s), label in zip(wanted, _labels(wanted)):
        rows = [r for r in exp.rows() if int(r["seed"]) == s]
        notes: list[str] = []
        known, unknown = [], []
        for p in sorted({r["proxy"] for r in rows}):
            try:
                get_proxy(p)
                known.append(p)
            except UnknownNameError:
                unknown.append(p)
        if unknown:
            notes.append(f"{label}: proxies not registered here, so of unknown sign, left out: {', '.join(unknown)}.")
            rows = [r for r in rows if r["proxy"] in set(known)]
        if not rows:
            skipped.append(f"{label}: no registered proxy's scores; skipped.")
            continue
        missing = missing_shards(exp.stores)
        if missing:
            notes.append(f"{label}: incomplete: {', '.join(missing)} of the run missing.")
        header = {"key": list(SCORE_KEY), "settings": exp.settings, "info": exp.stores[0].header.get("info") or {}}
        kwargs: dict[str, Any] = {}
        recorded = exp.targets()
        if recorded and "targets" in inspect.signature(prepare_report).parameters:
            kwargs["targets"] = recorded  # the targets the stores were evaluated on (all of them, pooled)
        try:
            stored = prepare_report(header, rows, data=data, spec_text=exp.spec, seed=s, n_resamples=n_resamples,
                                    plot=False, **kwargs)
        except ZCBenchError as exc:
            raise type(exc)(f"{', '.join(map(str, exp.paths))}: {exc}") from exc
        ctx = stored.context
        table = summarise(stored.rows, stored.space, list(ctx.targets), stored.proxies, s, None,
                          n_resamples=n_resamples, bootstrap_seed=bootstrap_seed, nan_policy=nan_policy,
                          top_k=percents)
        no_acc = sorted({(r.split, r.target, r.n_no_accuracy) for r in table if r.n_no_accuracy})
        notes += [f"{label}: {k} scored architectures have no stored {t} {sp} accuracy and are left out of n."
                  for sp, t, k in no_acc]
        runs.append(Run(label, exp, s, stored.space, ctx, stored.proxies, table, notes))

    blocks = []
    cautions: list[tuple[type[Warning], str]] = []
    for run in runs:
        for split, target in run.context.targets:
            rows = sorted((r for r in run.table if (r.split, r.target) == (split, target)), key=rank_key)
            blocks.append(Block(run, split, target, run.space.target_note(split, target), rows))
        cautions += comparison_notes(run.table, run.label)
    board = Leaderboard(runs, blocks, nan_policy, percents, n_resamples, skipped, cautions)
    if warn:
        warn_comparisons(cautions, stacklevel=2)
    return board


# -- formatting -----------------------------------------------------------------------------------------------
def _f(x: float | None, digits: int = 3) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _ci(r: CorrelationResult) -> str:
    return f"[{_f(r.ci_low)}, {_f(r.ci_high)}]"


def _overlaps(row: TableRow, top_k: Sequence[float]) -> list[str]:
    got = dict(row.top_k)
    return [_f(got.get(k, math.nan), 2) for k in top_k]


def columns(board: Leaderboard) -> tuple[str, ...]:
    return ("space / target", "#", "proxy", "n", "NaN", "failed", "Spearman \u03c1", "95% CI", "Kendall \u03c4",
            "95% CI", *(f"top-{_pct(k)}%" for k in board.top_k), "regret")


def _cells(block: Block, rank: int, r: TableRow, top_k: Sequence[float]) -> tuple[str, ...]:
    return (block.title, str(rank), r.proxy, str(r.spearman.n), str(r.spearman.n_nan), str(r.spearman.n_error),
            _f(r.spearman.statistic), _ci(r.spearman), _f(r.kendall.statistic), _ci(r.kendall),
            *_overlaps(r, top_k), _f(r.regret, 2))


def heading(board: Leaderboard) -> str:
    return (f"Proxy leaderboard: {len(board.runs)} run(s), {len(board.blocks)} space/target(s); NaN policy: "
            f"{board.nan_policy}; {board.n_resamples} bootstrap resamples")


def to_text(board: Leaderboard) -> str:
    """A fixed-width table for the terminal: one section per space/target, then the footnotes."""
    head = columns(board)[1:]
    body = [(b, [_cells(b, i, r, board.top_k)[1:] for i, r in enumerate(b.rows, start=1)]) for b in board.blocks]
    every = [head] + [c for _, cells in body for c in cells]
    widths = [max(len(row[i]) for row in every) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [heading(board), "", line(head), "  ".join("-" * w for w in widths)]
    for block, cells in body:
        out.append(f"== {block.title}")
        out += [line(c) for c in cells]
    out.append("")
    out += [f"[{i}] {note}" for i, note in enumerate(board.notes(), start=1)]
    return "\n".join(out) + "\n"


def to_markdown(board: Leaderboard) -> str:
    """One Markdown table (the space/target in the first column of every row), then numbered footnotes."""
    head = columns(board)
    lines = [f"**{heading(board)}**", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for b in board.blocks:
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(b, i, r, board.top_k)) + " |"
                  for i, r in enumerate(b.rows, start=1)]
    lines.append("")
    lines += [f"{i}. {note}" for i, note in enumerate(board.notes(), start=1)]
    return "\n".join(lines) + "\n"


def _tex_text(text: str) -> str:
    """Escaped for LaTeX text mode, with the few non-ASCII symbols the notes use in math mode."""
    text = _tex(text)
    for a, b in (("|", r"\textbar{}"), ("\u03c1", r"$\rho$"), ("\u03c4", r"$\tau$"), ("\u00b1", r"$\pm$")):
        text = text.replace(a, b)
    return text


def to_latex(board: Leaderboard) -> str:
    """A plain LaTeX ``tabular`` (``\\hline`` rules, no package needed), one section per space/target."""
    head = ["\\#", "Proxy", "$n$", "NaN", "Failed", r"Spearman $\rho$ [95\% CI]", r"Kendall $\tau$ [95\% CI]",
            *(f"Top-{_pct(k)}\\%" for k in board.top_k), "Regret"]
    spec = "rlrrrcc" + "r" * len(board.top_k) + "r"
    lines = [f"% {heading(board)}",
             "% Plain LaTeX tabular with \\hline rules: needs no package (no booktabs).",
             f"\\begin{{tabular}}{{{spec}}}", r"\hline", " & ".join(head) + r" \\", r"\hline"]
    for b in board.blocks:
        lines.append(f"\\multicolumn{{{len(head)}}}{{l}}{{\\textit{{{_tex_text(b.title)}}}}} \\\\")
        lines.append(r"\hline")
        for i, r in enumerate(b.rows, start=1):
            cells = (str(i), _tex(r.proxy), str(r.spearman.n), str(r.spearman.n_nan), str(r.spearman.n_error),
                     f"{_f(r.spearman.statistic)} {_ci(r.spearman)}", f"{_f(r.kendall.statistic)} {_ci(r.kendall)}",
                     *_overlaps(r, board.top_k), _f(r.regret, 2))
            lines.append(" & ".join(cells) + r" \\")
        lines.append(r"\hline")
    lines += [r"\end{tabular}", "", r"\par\footnotesize"]
    lines += [f"({i}) {_tex_text(note)}" + r"\\" for i, note in enumerate(board.notes(), start=1)]
    return "\n".join(lines) + "\n"


def csv_fields(board: Leaderboard) -> tuple[str, ...]:
    return ("run", "spec", "space", "dataset", "seed", "batch_size", "data_source", "stand_in_for", "augment",
            "sampling", "stores", "split", "target", "target_note", "rank", "proxy", "proxy_version",
            "higher_is_better", "n", "n_nan", "n_error", "n_missing", "n_no_accuracy",
            "spearman", "spearman_ci_low", "spearman_ci_high", "spearman_pvalue",
            "kendall", "kendall_ci_low", "kendall_ci_high", "kendall_pvalue",
            *(f"top{_pct(k)}_overlap" for k in board.top_k), "regret", "nan_policy", "n_resamples",
            "median_seconds")


def to_csv(board: Leaderboard) -> str:
    """Long format: one line per run, target and proxy, every number unrounded."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_fields(board), lineterminator="\n")
    writer.writeheader()
    for b in board.blocks:
        ctx = b.run.context
        for i, r in enumerate(b.rows, start=1):
            got = dict(r.top_k)
            writer.writerow({
                "run": b.run.label, "spec": b.run.spec, "space": ctx.space, "dataset": ctx.dataset,
                "seed": b.run.seed, "batch_size": "" if ctx.batch_size is None else ctx.batch_size,
                "data_source": ctx.data_source, "stand_in_for": ctx.stand_in_for or "",
                "augment": "" if ctx.augment is None else ctx.augment, "sampling": ctx.sampling,
                "stores": ";".join(str(p) for p in b.run.experiment.paths), "split": b.split, "target": b.target,
                "target_note": b.note, "rank": i, "proxy": r.proxy, "proxy_version": r.proxy_version,
                "higher_is_better": r.higher_is_better, "n": r.spearman.n, "n_nan": r.spearman.n_nan,
                "n_error": r.spearman.n_error, "n_missing": r.n_missing, "n_no_accuracy": r.n_no_accuracy,
                "spearman": r.spearman.statistic, "spearman_ci_low": r.spearman.ci_low,
                "spearman_ci_high": r.spearman.ci_high, "spearman_pvalue": r.spearman.pvalue,
                "kendall": r.kendall.statistic, "kendall_ci_low": r.kendall.ci_low,
                "kendall_ci_high": r.kendall.ci_high, "kendall_pvalue": r.kendall.pvalue,
                **{f"top{_pct(k)}_overlap": got.get(k, math.nan) for k in board.top_k},
                "regret": r.regret, "nan_policy": r.nan_policy, "n_resamples": board.n_resamples,
                "median_seconds": r.median_seconds,
            })
    return buf.getvalue()


def slug(text: str) -> str:
    """``text`` as a file-name part."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "run"


def write_leaderboard(out_dir: str | os.PathLike, board: Leaderboard, *, plot: bool = True,
                      stem: str = "leaderboard") -> dict[str, Path]:
    """Write ``<stem>.csv``, ``.md``, ``.tex`` and (``plot``) one bar chart per space/target
    (``<stem>-bars-<run>-<split>.png``) and one scatter grid per run (``<stem>-scatter-<run>.png``)
    under ``out_dir``, each whole or not at all; returns ``{name: path}``."""
    from .plots import bar_plot, scatter_plot

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {ext: atomic_write_text(out / f"{stem}.{ext}", fn(board))
                 for ext, fn in (("csv", to_csv), ("md", to_markdown), ("tex", to_latex))}
        if plot:
            for b in board.blocks:
                name = f"{stem}-bars-{slug(b.run.label)}-{slug(b.split)}-{slug(b.target)}"
                paths[name] = bar_plot(out / f"{name}.png", b.rows, f"{b.title}\nNaN policy: {board.nan_policy}")
            for run in board.runs:
                name = f"{stem}-scatter-{slug(run.label)}"
                rows = [r for r in run.experiment.rows() if int(r["seed"]) == run.seed]
                rows, shown, _ = with_population_scores(rows, run.proxies, run.seed)
                paths[name] = scatter_plot(out / f"{name}.png", rows, run.space, run.context, run.table,
                                           shown, title=run.label)
    except OSError as exc:
        raise RunError(f"cannot write the leaderboard under {str(out)!r} ({exc.strerror or exc})") from exc
    return paths
