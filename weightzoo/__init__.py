"""weightzoo: build, store, share and learn from zoos of trained neural networks.

The names below are what a user calls; each is imported on first use (``import weightzoo`` costs
next to nothing). Everything else lives in its module: ``weightzoo.zoo`` (building, stores, the
Hub), ``weightzoo.datasets`` (datasets of weights), ``weightzoo.metanet`` (learning from weights).
"""

from ._util.lazy import lazy_exports
from ._version import __version__
from .errors import HubError, ImportFormatError, LayoutError, SpecError, StoreError, WeightZooError, WriteError

_EXPORTS = {
    "ParamLayout": ".layout",
    "PermutationSpec": ".symmetry",
    "WeightSpace": ".weightspace",
    "ZooStore": ".zoo.store",
    "open_zoo": ".zoo.opener",
    "evaluate": ".zoo.evaluate",
    "build_zoo": ".zoo.build",
    "import_zoo": ".zoo.importers",
    "convert_zoo": ".zoo.transfer",
    "export_zoo": ".zoo.transfer",
    "push_zoo": ".zoo.hub",
    "pull_zoo": ".zoo.hub",
    "WeightDataset": ".datasets",
    "GraphDataset": ".datasets",
    "train_metanet": ".metanet.train",
    "MetanetRun": ".metanet.run",
    "load_run": ".metanet.run",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "__version__",
    *_EXPORTS,
    "WeightZooError",
    "SpecError",
    "LayoutError",
    "StoreError",
    "ImportFormatError",
    "HubError",
    "WriteError",
]
