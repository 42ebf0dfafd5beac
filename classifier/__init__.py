"""shortflow's runtime: capture -> flows -> features -> model -> enforcement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["featurize", "iter_featurize", "__version__"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from classifier.features.engine import featurize, iter_featurize


def __getattr__(name: str) -> Any:
    # Lazy, so that `import classifier.errors` stays cheap (no pandas) for tools and tests.
    # Both choose the engine (fast unless told or reading through tshark) in
    # classifier.features.engine.choose_engine.
    if name in ("featurize", "iter_featurize"):
        from classifier.features import engine

        return getattr(engine, name)
    raise AttributeError(name)
