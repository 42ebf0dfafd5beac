"""Per-flow features: statistics, bursts, SPLT, names; the schema.

The featurize path (packets -> flows -> rows) is :mod:`classifier.features.featurize`.
"""

from classifier.features.schema import FEATURE_COLUMNS, SCHEMA_VERSION

__all__ = ["FEATURE_COLUMNS", "SCHEMA_VERSION"]
