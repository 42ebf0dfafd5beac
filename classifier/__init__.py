"""shortflow's runtime: capture -> flows -> features -> model -> enforcement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["featurize", "__version__"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from classifier.features.featurize import featurize


def __getattr__(name: str) -> Any:
    # Lazy, so that `import classifier.errors` stays cheap (no pandas) for tools and tests.
    if name == "featurize":
        from classifier.features.featurize import featurize

        return featurize
    raise AttributeError(name)
