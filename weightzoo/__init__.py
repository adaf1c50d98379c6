"""weightzoo: build, store, share and learn from zoos of trained neural networks."""

__version__ = "0.1.0"

from .errors import HubError, ImportFormatError, LayoutError, SpecError, StoreError, WeightZooError
from .layout import AxisRef, GroupAction, ParamEntry, ParamLayout, PermGroup, PermutationSpec
from .weightspace import WeightSpace
from .zoo.build import build_zoo
from .zoo.hub import pull_zoo, push_zoo
from .zoo.importers import import_zoo
from .zoo.spec import ZooSpec, load_spec
from .zoo.store import ZooStore, open_zoo
from .zoo.transfer import convert_zoo, export_zoo

__all__ = [
    "__version__",
    "WeightZooError",
    "SpecError",
    "LayoutError",
    "StoreError",
    "ImportFormatError",
    "HubError",
    "ParamLayout",
    "ParamEntry",
    "PermutationSpec",
    "PermGroup",
    "AxisRef",
    "GroupAction",
    "WeightSpace",
    "ZooStore",
    "open_zoo",
    "ZooSpec",
    "load_spec",
    "build_zoo",
    "import_zoo",
    "convert_zoo",
    "export_zoo",
    "push_zoo",
    "pull_zoo",
]
