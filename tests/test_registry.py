"""The proxy registry: wildcards, close matches, duplicates, and third-party entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from zc_proxies import get_proxy, list_proxies, register_proxy, score
from zc_proxies.errors import DuplicateNameError, UnknownNameError
from zc_proxies.proxies import PROXIES


def test_wildcards():
    assert list_proxies("fish*") == ["fisher", "fisher_potential"]
    assert "fisher" in list_proxies()
    assert list_proxies("no-such-*") == []


def test_specs_of_the_fisher_proxies():
    for name in ("fisher", "fisher_potential"):
        spec = get_proxy(name).spec
        assert spec.needs_labels and spec.needs_grad and spec.bn_mode == "train" and spec.higher_is_better
        assert spec.version


def test_duplicate_names_are_refused():
    with pytest.raises(DuplicateNameError, match="fisher"):
        register_proxy("fisher", needs_labels=False, needs_grad=False)(lambda ctx: 0.0)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownNameError) as err:
        get_proxy("fisher_potental")
    assert "fisher_potential" in str(err.value)


def test_register_and_score_a_custom_proxy():
    @register_proxy("test_width", needs_labels=False, needs_grad=False, version="7")
    def width(ctx):
        """Output width of the model."""
        return float(ctx.model(ctx.inputs).shape[1])

    try:
        net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
        assert score(net, (torch.randn(3, 12), None), "test_width") == 5.0
        assert get_proxy("test_width").spec.description == "Output width of the model."
    finally:
        PROXIES.remove("test_width")


PLUGIN = '''
from zc_proxies import register_proxy

@register_proxy("plugin_depth", needs_labels=False, needs_grad=False, version="3")
def depth(ctx):
    """Number of modules (a third-party proxy)."""
    return float(len(list(ctx.model.modules())))
'''


def _install_plugin(site: Path) -> None:
    """A minimal installed distribution: a module plus a dist-info with entry_points.txt."""
    (site / "zcb_plugin_demo.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "zcb_plugin_demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zcb-plugin-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[zc_proxies.proxies]\nplugin_depth = zcb_plugin_demo:depth\n")
    (info / "RECORD").write_text("")


def test_entry_point_proxy_is_listed_and_loaded_lazily(tmp_path):
    """In a fresh interpreter: listed without importing the plugin, imported on first use."""
    _install_plugin(tmp_path)
    code = textwrap.dedent("""
        import sys, torch
        from torch import nn
        import zc_proxies
        assert "plugin_depth" in zc_proxies.list_proxies("plugin_*"), zc_proxies.list_proxies()
        assert "zcb_plugin_demo" not in sys.modules, "listing must not import the plugin"
        spec = zc_proxies.get_proxy("plugin_depth").spec
        assert spec.version == "3" and "zcb_plugin_demo" in sys.modules
        net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        print(zc_proxies.score(net, (torch.randn(2, 4), None), "plugin_depth"))
    """)
    env = {"PYTHONPATH": str(tmp_path), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3.0"


def test_cli_lists_proxies_with_specs():
    out = subprocess.run([sys.executable, "-m", "zc_proxies.cli", "list", "proxies", "fish*"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:7] == ["name", "labels", "grads", "bn", "higher", "network", "version"]
    assert [line.split()[0] for line in lines[1:]] == ["fisher", "fisher_potential"]
    assert [line.split()[5] for line in lines[1:]] == ["live", "live"]  # dead NB201 ops may be dropped
