"""Per-flow features: statistics, bursts, SPLT; the schema (names: :mod:`classifier.names`).

The featurize path (packets -> flows -> rows) is :mod:`classifier.features.featurize`.
"""

from classifier.features.schema import FEATURE_COLUMNS, SCHEMA_VERSION

__all__ = ["FEATURE_COLUMNS", "SCHEMA_VERSION"]
