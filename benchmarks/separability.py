"""How separable are short-form and long-form flows with a simple model, lab vs real?

Prints, for whole-flow rows labeled short-form or long-form: a logistic regression on log
packet-statistics (SPLT and TCP flags left out: they describe capture artefacts such as the
imported traces' synthetic flags, not traffic shape) evaluated by grouped 5-fold CV over lab
captures, and the same model trained on all lab flows and tested on the real flows (the
imported Reels trace vs Requet and the imported YouTube traces). If the lab were harder than
reality the second figure would be the higher one.

    python benchmarks/separability.py LAB_MANIFEST... [--real MANIFEST...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from classifier.features.featurize import FeaturizeConfig
from classifier.features.schema import FEATURE_COLUMNS
from training.dataset import flow_table
from training.traces import default_cache_dir

SHAPE = [c for c in FEATURE_COLUMNS if not c.startswith(("splt_", "flag_"))]


def _simple() -> Pipeline:
    return make_pipeline(
        FunctionTransformer(np.log1p),
        StandardScaler(),
        LogisticRegression(max_iter=2000, class_weight="balanced"),
    )


def _xy(t: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = t[t["label"].isin(["short-form", "long-form"])]
    return (
        t[SHAPE].clip(lower=0).to_numpy(float),
        (t["label"] == "short-form").to_numpy(int),
        t["capture_id"].to_numpy(),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lab", nargs="+", type=Path)
    ap.add_argument(
        "--real",
        nargs="+",
        type=Path,
        default=[
            Path(__file__).resolve().parents[1] / "datasets" / "public.csv",
            default_cache_dir() / "traces.csv",
        ],
    )
    args = ap.parse_args()
    cfg = FeaturizeConfig(snapshots=())
    x, y, g = _xy(flow_table(args.lab, cfg, jobs=2))
    print(
        f"lab (generated): {y.sum()} short-form, {(1 - y).sum()} long-form flows, "
        f"{len(set(g))} captures"
    )
    pred, prob = np.zeros(len(y)), np.zeros(len(y))
    for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(x, y, g):
        assert not set(g[tr]) & set(g[te]), "a capture on both sides of a split"
        model = _simple().fit(x[tr], y[tr])
        pred[te], prob[te] = model.predict(x[te]), model.predict_proba(x[te])[:, 1]
    print(
        f"  grouped 5-fold CV by capture: balanced accuracy "
        f"{balanced_accuracy_score(y, pred):.3f}, ROC AUC {roc_auc_score(y, prob):.3f}"
    )
    xr, yr, gr = _xy(flow_table(args.real, cfg, jobs=2))
    print(
        f"real (public captures + imported traces): {yr.sum()} short-form, "
        f"{(1 - yr).sum()} long-form flows, {len(set(gr))} captures"
    )
    model = _simple().fit(x, y)
    pr, pp = model.predict(xr), model.predict_proba(xr)[:, 1]
    print(
        f"  train on lab, test on real: balanced accuracy {balanced_accuracy_score(yr, pr):.3f},"
        f" ROC AUC {roc_auc_score(yr, pp):.3f}; real long-form called short-form "
        f"{pr[yr == 0].mean():.3f}, real short-form called short-form {pr[yr == 1].mean():.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
