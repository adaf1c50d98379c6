"""Learning from weights: DWS equivariant networks, graph metanetworks, baselines, training, and
saved runs on the Hub. Names are imported on first use (PyTorch Geometric only with the GMN).

Where things go: a new metanetwork is a module here plus a row of
:data:`~weightzoo.metanet.models.MODEL_KINDS`; operations on weights (alignment, merging,
augmentation, weight generation) are modules of their own beside these.
"""

from .._util.lazy import lazy_exports

_EXPORTS = {
    "DWSLayer": ".dws",
    "DWSNet": ".dws",
    "GMN": ".gmn",
    "EdgeUpdateConv": ".gmn",
    "GraphBuilder": "..paramgraph",
    "build_graphs": "..paramgraph",
    "to_networkx": "..paramgraph",
    "FlatMLP": ".baselines",
    "StatNN": ".baselines",
    "DeepSets": ".baselines",
    "weight_statistics": ".baselines",
    "fit_statnn_gbt": ".baselines",
    "predict_gbt": ".baselines",
    "MetanetTask": ".data",
    "SplitSpec": ".data",
    "MODEL_KINDS": ".models",
    "MetanetRun": ".run",
    "load_run": ".run",
    "TrainOptions": ".train",
    "train_metanet": ".train",
    "Aligner": ".align",
    "weight_matching": ".align",
    "activation_matching": ".align",
    "Functional": ".functional",
    "member_connectivity": ".connectivity",
    "merge": ".merge",
    "merge_models": ".merging",
    "greedy_soup": ".merging",
    "push_run": ".hub",
    "push_generator": ".hub",
    "GeneratorConfig": ".diffusion",
    "WeightGenerator": ".diffusion",
    "train_generator": ".diffusion",
    "load_generator": ".diffusion",
    "generate_members": ".diffusion",
    "import_predictions": ".hub",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
