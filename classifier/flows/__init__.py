"""Flow key, flow state and the flow table (timeouts, eviction)."""

from classifier.flows.flow import DOWN, UP, Flow
from classifier.flows.key import FlowKey, orient
from classifier.flows.table import FlowConfig, FlowPlugin, FlowTable, TableStats

__all__ = [
    "DOWN",
    "UP",
    "Flow",
    "FlowConfig",
    "FlowKey",
    "FlowPlugin",
    "FlowTable",
    "TableStats",
    "orient",
]
