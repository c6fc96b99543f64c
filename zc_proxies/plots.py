"""Figures of correlation tables: a scatter grid (score against accuracy) and a leaderboard bar chart.

Both are readable at any number of proxies:

* :func:`scatter_figure` draws one panel per (proxy, target) on a grid of
  fixed-size cells (:data:`CELL`, inches), so the figure grows with the number
  of proxies instead of squeezing panels; the rows of one block of proxies are
  the targets (val above test). Matplotlib's constrained layout keeps titles
  and labels apart and inside the figure. Every panel of one target shares
  the same accuracy (y) range, and each panel chooses its own x scale
  (:func:`choose_xscale`) so that one zero or one outlier does not squash the
  other points.
* :func:`bar_figure` draws Spearman's rho with its bootstrap interval per
  proxy as horizontal bars, for one space and target.

:func:`scatter_plot` and :func:`bar_plot` write them as PNG files atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError
from .runs.atomic import atomic_open
from .runs.store import OK

if TYPE_CHECKING:  # only for annotations: report imports this module
    from matplotlib.figure import Figure

    from .report import ReportContext, TableRow
    from .spaces import SearchSpace

#: Size of one scatter panel, inches (width, height).
CELL = (3.2, 2.8)
#: Panels per grid row (proxies side by side) at most.
MAX_COLS = 4
#: Resolution of the PNG files.
DPI = 100
#: A spread wider than this factor (max / min of the magnitudes) counts as "orders of magnitude".
DECADES_2 = 100.0


def _fmt(x: float | None, digits: int = 3) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# -- axis scales ----------------------------------------------------------------------------------------------
def choose_xscale(values: Sequence[float]) -> tuple[str, float | None]:
    """``("linear" | "log" | "symlog", linthresh)`` for a panel's scores.

    * all positive and spanning more than two decades (max / min > 100): ``log``;
    * a zero or negatives, and the non-zero magnitudes spanning more than two
      decades (largest over the 10th percentile > 100): ``symlog``, with
      ``linthresh`` the power of ten at or below that 10th percentile, so the
      bulk of the points lies on the logarithmic part and zero in the linear part;
    * otherwise (including fewer than two distinct finite values): ``linear``.

    Robust to one outlier: a single huge score makes the span large, so the
    panel goes logarithmic instead of crushing the other points against zero.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2 or np.all(x == x[0]):
        return "linear", None
    if np.all(x > 0):
        return ("log", None) if x.max() / x.min() > DECADES_2 else ("linear", None)
    mag = np.abs(x[x != 0])
    if mag.size == 0:
        return "linear", None
    low = float(np.quantile(mag, 0.1))
    if mag.max() / low > DECADES_2:
        return "symlog", float(10.0 ** math.floor(math.log10(low)))
    return "linear", None


def symlog_ticks(values: Sequence[float], linthresh: float, per_side: int = 3) -> list[float]:
    """0 and powers of ten beyond ``linthresh`` on each side the data reach, at most ``per_side`` a side."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    ticks = [0.0]
    lo = math.floor(math.log10(linthresh)) + 1  # a decade clear of 0, so the labels near 0 do not collide
    for sign, mag in ((1.0, x[x > 0]), (-1.0, -x[x < 0])):
        if not mag.size or mag.max() < 10.0 ** lo:
            continue
        hi = math.floor(math.log10(mag.max()))
        step = max(1, math.ceil((hi - lo + 1) / per_side))
        ticks += [sign * 10.0 ** e for e in range(hi, lo - 1, -step)]
    return sorted(ticks)


def apply_xscale(ax: Any, scale: str, linthresh: float | None, values: Sequence[float] = ()) -> None:
    """Set a chosen x scale on ``ax`` with a few readable ticks (``values``: the panel's scores)."""
    from matplotlib import ticker

    if scale == "log":
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(numticks=4))
    elif scale == "symlog":
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.xaxis.set_major_locator(ticker.FixedLocator(symlog_ticks(values, linthresh)))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        x = np.asarray(values, dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size and x.min() >= 0:  # nothing negative: do not spend the left of the axis on negative decades
            ax.set_xlim(left=-0.5 * linthresh)
        elif x.size and x.max() <= 0:
            ax.set_xlim(right=0.5 * linthresh)
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)


# -- the scatter grid -----------------------------------------------------------------------------------------
@dataclass
class Panel:
    """One scatter panel: a proxy's stored scores against one target's accuracies."""

    proxy: str
    split: str
    target: str
    x: np.ndarray
    y: np.ndarray
    higher_is_better: bool = True
    rho: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    n: int = 0
    n_not_shown: int = 0
    xscale: str = "linear"
    linthresh: float | None = None


@dataclass
class Grid:
    """Where :func:`scatter_figure` put its panels."""

    rows: int
    cols: int
    cell: tuple[float, float]
    dpi: int
    panels: list[Panel]

    @property
    def pixels(self) -> tuple[int, int]:
        """(width, height) of the PNG in pixels."""
        return round(self.cols * self.cell[0] * self.dpi), round(self.rows * self.cell[1] * self.dpi)


def scatter_panels(rows: Iterable[Mapping[str, Any]], space: SearchSpace, ctx: ReportContext,
                   table: Sequence[TableRow], proxies: Sequence[str],
                   indices: Sequence[int] | None = None) -> list[Panel]:
    """One :class:`Panel` per (proxy, target) of ``ctx.targets``, proxies outermost."""
    from .proxies.base import spec_of

    wanted = None if indices is None else {int(i) for i in indices}
    stats = {(r.proxy, r.split, r.target): r for r in table}
    scores: dict[str, list[tuple[int, float]]] = {p: [] for p in proxies}
    for r in rows:
        if (r["proxy"] in scores and int(r["seed"]) == ctx.seed and r["status"] == OK
                and r.get("score") is not None and (wanted is None or int(r["index"]) in wanted)):
            scores[r["proxy"]].append((int(r["index"]), float(r["score"])))
    acc_cache: dict[tuple[int, str, str], float] = {}

    def accuracy(i: int, dataset: str, split: str) -> float:
        if (i, dataset, split) not in acc_cache:
            try:
                acc_cache[i, dataset, split] = float(space.accuracy(i, dataset, split))
            except DataError:
                acc_cache[i, dataset, split] = math.nan
        return acc_cache[i, dataset, split]

    panels = []
    for proxy in proxies:
        higher = spec_of(proxy).higher_is_better
        for split, dataset in ctx.targets:
            pts = np.array([(s, accuracy(i, dataset, split)) for i, s in sorted(scores[proxy])],
                           dtype=np.float64).reshape(-1, 2)
            pts = pts[np.isfinite(pts).all(axis=1)]
            res = stats.get((proxy, split, dataset))
            scale, lin = choose_xscale(pts[:, 0])
            panels.append(Panel(
                proxy, split, dataset, pts[:, 0], pts[:, 1], higher,
                rho=res.spearman.statistic if res else math.nan,
                ci=(res.spearman.ci_low, res.spearman.ci_high) if res else (math.nan, math.nan),
                n=res.spearman.n if res else len(pts),
                n_not_shown=(res.spearman.n_nan + res.spearman.n_error) if res else 0,
                xscale=scale, linthresh=lin))
    return panels


def grid_shape(n_proxies: int, n_targets: int, max_cols: int = MAX_COLS) -> tuple[int, int]:
    """``(rows, cols)``: proxies side by side (at most ``max_cols``), one row per target in each block."""
    cols = max(1, min(max_cols, n_proxies))
    return max(1, math.ceil(n_proxies / cols)) * max(1, n_targets), cols


def scatter_figure(panels: Sequence[Panel], title: str = "", *, cell: tuple[float, float] = CELL,
                   max_cols: int = MAX_COLS, dpi: int = DPI) -> tuple[Figure, Grid]:
    """The grid of ``panels`` (from :func:`scatter_panels`): one axes per panel, nothing else.

    Panels come proxies outermost; each block of up to ``max_cols`` proxies
    takes one grid row per target. The figure is ``cols * cell[0]`` by
    ``rows * cell[1]`` inches, laid out with constrained layout.
    """
    plt = _matplotlib()
    proxies = list(dict.fromkeys(p.proxy for p in panels))
    targets = list(dict.fromkeys((p.split, p.target) for p in panels))
    nrows, ncols = grid_shape(len(proxies), len(targets), max_cols)
    grid = Grid(nrows, ncols, cell, dpi, list(panels))
    width, height = grid.pixels
    # half a pixel more, so that width/dpi*dpi never rounds down to one pixel less
    fig = plt.figure(figsize=((width + 0.5) / dpi, (height + 0.5) / dpi), dpi=dpi, layout="constrained")
    if title:
        fig.suptitle(title, fontsize=9)
    spec = fig.add_gridspec(nrows, ncols)
    ylims = {}
    for t in targets:
        ys = np.concatenate([p.y for p in panels if (p.split, p.target) == t] or [np.zeros(0)])
        if ys.size:
            lo, hi = float(ys.min()), float(ys.max())
            pad = 0.04 * (hi - lo) if hi > lo else 1.0
            ylims[t] = (lo - pad, hi + pad)
    where = {(p, t): (ip // ncols * len(targets) + it, ip % ncols)
             for ip, p in enumerate(proxies) for it, t in enumerate(targets)}
    for panel in panels:
        t = (panel.split, panel.target)
        r, c = where[panel.proxy, t]
        ax = fig.add_subplot(spec[r, c])
        if panel.x.size:
            ax.scatter(panel.x, panel.y, s=5, alpha=0.5, linewidths=0, rasterized=True)
        apply_xscale(ax, panel.xscale, panel.linthresh, panel.x)
        if t in ylims:
            ax.set_ylim(*ylims[t])
        arrow = "" if panel.higher_is_better else " (lower = better)"
        ax.set_title(f"{panel.proxy}{arrow}\n{panel.split}: \u03c1 {_fmt(panel.rho)} "
                     f"[{_fmt(panel.ci[0], 2)}, {_fmt(panel.ci[1], 2)}], n={panel.n}", fontsize=8)
        if panel.xscale == "symlog":
            scale = f" (symlog, linear within \u00b1{panel.linthresh:g})"
        else:
            scale = " (log)" if panel.xscale == "log" else ""
        ax.set_xlabel(f"score{scale}", fontsize=7)
        ax.set_ylabel(f"{panel.split} acc. (%)" if c == 0 else "", fontsize=7)
        ax.tick_params(labelsize=6)
        if panel.n_not_shown:
            ax.text(0.02, 0.02, f"{panel.n_not_shown} NaN/failed not shown", transform=ax.transAxes, fontsize=6,
                    color="0.35", va="bottom")
    return fig, grid


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    plt = _matplotlib()
    path = Path(path)
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def context_title(ctx: ReportContext) -> str:
    """A figure title naming the space and how the scores were made."""
    batch = "minibatch not recorded" if ctx.batch_size is None else f"batch {ctx.batch_size}"
    title = f"{ctx.spec}, {batch}, {ctx.data_source}, seed {ctx.seed}"
    if ctx.stand_in_for:
        title += f" (STAND-IN for {ctx.stand_in_for})"
    return title


def scatter_plot(path: str | Path, rows: Iterable[Mapping[str, Any]], space: SearchSpace, ctx: ReportContext,
                 table: Sequence[TableRow], proxies: Sequence[str], indices: Sequence[int] | None = None, *,
                 title: str | None = None, cell: tuple[float, float] = CELL, max_cols: int = MAX_COLS,
                 dpi: int = DPI) -> Path:
    """A PNG with one panel per proxy and target: stored score against that target's accuracy.

    See :func:`scatter_figure` for the layout and :func:`choose_xscale` for the x axes.
    """
    panels = scatter_panels(rows, space, ctx, table, proxies, indices)
    fig, _ = scatter_figure(panels, context_title(ctx) if title is None else title, cell=cell,
                            max_cols=max_cols, dpi=dpi)
    return _save(fig, path, dpi)


# -- the leaderboard bar chart --------------------------------------------------------------------------------
def bar_figure(table: Sequence[TableRow], title: str = "", *, dpi: int = DPI) -> Figure:
    """Spearman's rho per proxy with its 95% interval as horizontal bars, in ``table``'s order from the top.

    ``table`` holds one space and target; a proxy whose rho is undefined gets
    an empty bar and "n/a". Bars of negative rho are drawn in another colour.
    """
    plt = _matplotlib()
    n = len(table)
    fig = plt.figure(figsize=(6.4, 1.3 + 0.3 * max(n, 1)), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    rho = np.array([r.spearman.statistic for r in table], dtype=np.float64)
    low = np.array([r.spearman.ci_low for r in table], dtype=np.float64)
    high = np.array([r.spearman.ci_high for r in table], dtype=np.float64)
    err = np.vstack([np.where(np.isfinite(low), rho - low, 0.0), np.where(np.isfinite(high), high - rho, 0.0)])
    err = np.nan_to_num(np.clip(err, 0.0, None))
    ypos = np.arange(n)
    colors = ["tab:red" if v < 0 else "tab:blue" for v in np.nan_to_num(rho)]
    ax.barh(ypos, np.nan_to_num(rho), xerr=err, color=colors, alpha=0.85, height=0.7,
            error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "0.2"})
    ax.set_yticks(ypos, [f"{r.proxy} (n={r.spearman.n})" for r in table], fontsize=8)
    ax.invert_yaxis()
    for y, v in zip(ypos, rho):
        if not math.isfinite(v):
            ax.text(0.01, y, "n/a", va="center", fontsize=7)
    lows = [v for v in np.concatenate([low, rho]) if math.isfinite(v)]
    ax.set_xlim(min(0.0, min(lows, default=0.0)) - 0.05, 1.0)
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_xlabel("Spearman \u03c1 with accuracy (95% bootstrap CI)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def bar_plot(path: str | Path, table: Sequence[TableRow], title: str = "", *, dpi: int = DPI) -> Path:
    """:func:`bar_figure` written as a PNG at ``path``."""
    return _save(bar_figure(table, title, dpi=dpi), path, dpi)
