"""Students from teachers: SFT on trajectories (:mod:`.sft`), the chain-of-thought baseline (:mod:`.cot`) and GRPO
on the rollout loop (:mod:`.grpo`), each in its own package (settings without torch, data, training, launch,
``python -m`` entry point) over one shared core: :mod:`.training` (checkpoints, ranks, device and precision),
:mod:`.launch` (``accelerate launch``), :mod:`.loading` (students) and :mod:`agentdistill.tracking` (W&B)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports each name of ``exports`` (name: submodule) from
    its submodule on first use: an algorithm's package then names its entry points, while reading its
    settings (``package.settings``) imports neither torch nor TRL."""

    def attribute(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{exports[name]}"), name)

    return attribute
