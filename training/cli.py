"""Sub-commands that need the trainer: dataset, record, train, evaluate, lab.

`classifier.cli` registers these only when the `training` package is installed; a router
that ships only `classifier/` has the runtime commands alone.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    from training import dataset_cli, session_cli, train_cli
    from training.lab import cli as lab_cli

    dataset_cli.register(sub)
    dataset_cli.register_record(sub)
    train_cli.register(sub)
    session_cli.register(sub)
    lab_cli.add_parser(sub)
