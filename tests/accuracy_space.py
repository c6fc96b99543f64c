"""A search space that is only its accuracies: for tests of tables, reports and plots."""

from __future__ import annotations

from zc_proxies.spaces.base import SearchSpace


class AccuracyOnlySpace(SearchSpace):
    """``size`` architectures named ``a0``, ``a1``, ...; subclasses give ``name``, ``size`` and ``accuracy``."""

    datasets = ("cifar10",)
    splits = ("val", "test")
    size = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> str:
        return f"a{i}"

    def index_of(self, arch: str) -> int:
        return int(arch[1:])

    def build(self, arch, num_classes):
        raise NotImplementedError("an accuracy-only space has no networks")

    def params(self, index: int, dataset: str) -> int:
        return 0
