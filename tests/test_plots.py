"""The scatter grid and the leaderboard bar chart: sizes, panel counts, axis scales, shared y ranges, layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
from accuracy_space import AccuracyOnlySpace
from PIL import Image

from zc_proxies.plots import (
    CELL,
    DPI,
    bar_figure,
    bar_plot,
    choose_xscale,
    grid_shape,
    scatter_figure,
    scatter_panels,
    scatter_plot,
    symlog_ticks,
)
from zc_proxies.proxies import register_proxy
from zc_proxies.proxies.base import PROXIES
from zc_proxies.report import ReportContext, summarise
from zc_proxies.runs.store import ResultStore, read_store

N = 40
PROXY_NAMES = [f"plot_p{i:02d}" for i in range(17)]
ZERO, OUTLIER, NEGATIVE = PROXY_NAMES[0], PROXY_NAMES[1], PROXY_NAMES[2]


@pytest.fixture(autouse=True, scope="module")
def _plot_proxies():
    """17 registered proxies for this module only (registered at import, they would join other modules' lists)."""
    for name in PROXY_NAMES:
        register_proxy(name, needs_labels=False, needs_grad=False, higher_is_better=name != PROXY_NAMES[3])(
            lambda ctx: 0.0)
    yield
    for name in PROXY_NAMES:
        PROXIES.remove(name)


class PlotSpace(AccuracyOnlySpace):
    name = "plot-test"
    size = N

    def accuracy(self, index, dataset, split):
        return 40.0 + index if split == "val" else 80.0 + 0.25 * index


def scores(proxy: str) -> list[float]:
    rng = np.random.default_rng(PROXY_NAMES.index(proxy))
    base = np.arange(N, dtype=np.float64) + rng.normal(0, 5, N)
    if proxy == ZERO:  # spans four decades, plus one zero
        out = 10.0 ** (2 + 4 * np.arange(N) / N)
        out[3] = 0.0
        return out.tolist()
    if proxy == OUTLIER:  # values in [1, 2] and one huge outlier
        out = 1.0 + np.arange(N) / N
        out[7] = 1e6
        return out.tolist()
    if proxy == NEGATIVE:  # both signs, one outlier
        out = np.linspace(-1.0, 1.0, N)
        out[5] = 1e6
        return out.tolist()
    return (base + 100.0).tolist()


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "scores.jsonl"
    with ResultStore(path, {"space": "plot-test", "dataset": "cifar10", "batch_size": 64},
                     info={"spec": "plot-test"}) as store:
        store.append([{"index": i, "proxy": p, "seed": 0, "status": "ok", "score": s, "proxy_version": "1",
                       "seconds": 0.0} for p in PROXY_NAMES for i, s in enumerate(scores(p))])
    _, rows = read_store(path)
    ctx = ReportContext(spec="plot-test", space="plot-test", dataset="cifar10", num_classes=10, batch_size=64,
                        seed=0, augment=True, data_source="cifar10-train", stand_in_for=None, source_note="",
                        targets=(("val", "cifar10"), ("test", "cifar10")), n_resamples=10)
    table = summarise(rows, PlotSpace(), ctx.targets, PROXY_NAMES, 0, n_resamples=10)
    return rows, ctx, table


def test_scatter_grid_size_and_panel_count(stored, tmp_path):
    rows, ctx, table = stored
    panels = scatter_panels(rows, PlotSpace(), ctx, table, PROXY_NAMES)
    assert len(panels) == 17 * 2
    fig, grid = scatter_figure(panels, "title")
    try:
        assert len(fig.axes) == 17 * 2  # one axes per (proxy, target), no empty ones
        assert (grid.rows, grid.cols) == grid_shape(17, 2) == (10, 4)  # 5 blocks of 4 proxies, val and test rows
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    png = scatter_plot(tmp_path / "scatter.png", rows, PlotSpace(), ctx, table, PROXY_NAMES)
    with Image.open(png) as im:
        assert im.size == (round(4 * CELL[0] * DPI), round(10 * CELL[1] * DPI)) == (1280, 2800)
    # three proxies: 1 row block x 2 targets x 3 columns, whatever the cell arithmetic rounds to
    png = scatter_plot(tmp_path / "three.png", rows, PlotSpace(), ctx, table, PROXY_NAMES[:3], cell=(2.8, 2.8))
    with Image.open(png) as im:
        assert im.size == (round(3 * 2.8 * DPI), round(2 * 2.8 * DPI))


def test_axis_scales_and_shared_accuracy_range(stored):
    import matplotlib.pyplot as plt

    rows, ctx, table = stored
    panels = scatter_panels(rows, PlotSpace(), ctx, table, PROXY_NAMES)
    fig, _ = scatter_figure(panels)
    try:
        scales = {(p.proxy, p.split): ax.get_xscale() for p, ax in zip(panels, fig.axes)}
        assert scales[ZERO, "val"] == scales[ZERO, "test"] == "symlog"
        assert scales[OUTLIER, "val"] == "log"
        assert scales[NEGATIVE, "val"] == "symlog"
        assert {scales[p, "val"] for p in PROXY_NAMES[3:]} == {"linear"}
        for split in ("val", "test"):
            lims = {ax.get_ylim() for p, ax in zip(panels, fig.axes) if p.split == split}
            assert len(lims) == 1
            lo, hi = lims.pop()
            ys = [PlotSpace().accuracy(i, "cifar10", split) for i in range(N)]
            assert lo < min(ys) and hi > max(ys)
        # constrained layout: titles never overlap, and nothing of any panel leaves the figure
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        titles = [ax.title.get_window_extent(renderer) for ax in fig.axes]
        for i, a in enumerate(titles):
            for b in titles[i + 1:]:
                assert not a.overlaps(b)
        for ax in fig.axes:
            t = ax.get_tightbbox(renderer)
            assert t.x0 >= box.x0 - 1 and t.y0 >= box.y0 - 1 and t.x1 <= box.x1 + 1 and t.y1 <= box.y1 + 1
    finally:
        plt.close(fig)


def test_choose_xscale_rules():
    assert choose_xscale([1.0, 2.0, 3.0]) == ("linear", None)
    assert choose_xscale([1.0, 10.0, 1000.0])[0] == "log"
    assert choose_xscale([100.0, 150.0, 200.0, 0.0]) == ("linear", None)  # a zero beside a narrow range: fine
    scale, lin = choose_xscale([0.0, *10.0 ** np.linspace(2, 6, 30)])
    assert scale == "symlog" and lin == 100.0
    assert choose_xscale([-1.0, 0.5, 1e6, *np.linspace(-1, 1, 20)])[0] == "symlog"
    assert choose_xscale([0.0, 0.0]) == ("linear", None) and choose_xscale([math.nan, 1.0]) == ("linear", None)
    assert symlog_ticks([0.0, 5.0, 5e6], 1.0) == [0.0, 1e2, 1e4, 1e6]  # decades 1..6, every second from the top
    ticks = symlog_ticks([-1e4, 0.0, 1e8], 1.0)
    assert 0.0 in ticks and sum(t > 0 for t in ticks) <= 3 and sum(t < 0 for t in ticks) <= 3


def test_bar_chart_has_one_bar_per_proxy(stored, tmp_path):
    import matplotlib.pyplot as plt

    _, _, table = stored
    val = [r for r in table if r.split == "val"]
    fig = bar_figure(val, "plot-test: val")
    try:
        ax = fig.axes[0]
        assert len(ax.patches) == 17
        widths = [p.get_width() for p in ax.patches]
        assert widths == pytest.approx([r.spearman.statistic for r in val])
        assert [t.get_text().split(" (")[0] for t in ax.get_yticklabels()] == [r.proxy for r in val]
    finally:
        plt.close(fig)
    png = bar_plot(tmp_path / "bars.png", val, "plot-test: val")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
