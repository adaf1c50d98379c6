"""Learning from weights: DWS equivariant networks, graph metanetworks, baselines, training."""

from .baselines import DeepSets, FlatMLP, StatNN, fit_statnn_gbt, predict_gbt, weight_statistics
from .data import MetanetTask, SplitSpec
from .dws import DWSLayer, DWSNet
from .gmn import GMN, EdgeUpdateConv
from .graph import GraphBuilder, build_graphs, to_networkx
from .hub import import_predictions, push_run
from .models import MODEL_KINDS
from .train import MetanetRun, TrainOptions, load_run, train_metanet

__all__ = [
    "DWSLayer",
    "DWSNet",
    "GMN",
    "EdgeUpdateConv",
    "GraphBuilder",
    "build_graphs",
    "to_networkx",
    "FlatMLP",
    "StatNN",
    "DeepSets",
    "weight_statistics",
    "fit_statnn_gbt",
    "predict_gbt",
    "MetanetTask",
    "SplitSpec",
    "MODEL_KINDS",
    "MetanetRun",
    "push_run",
    "import_predictions",
    "TrainOptions",
    "load_run",
    "train_metanet",
]
