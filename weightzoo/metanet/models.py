"""The metanetworks the trainer knows, each wrapped with the way it reads a batch of members.

A ``Metanet`` maps :class:`~weightzoo.metanet.data.ZooMembers` to ``[B, out_features]``. Every
kind has defaults, an input description fit from training members (the layout it reads, the
statistic slots, the graph feature sizes) that goes into the run's ``config.json``, and a
builder that recreates the network from that description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..layout import ParamLayout
from ..weightspace import WeightSpace
from .baselines import DeepSets, FlatMLP, StatNN, statistic_slots
from .data import ZooMembers, check_same_layout
from .dws import DWSNet
from .probes import ProbeFeatures


class Metanet(nn.Module):
    """A metanetwork plus its input encoding; ``forward(members) -> [B, out_features]``."""

    def __init__(self, kind: str, net: nn.Module) -> None:
        super().__init__()
        self.kind, self.net = kind, net

    def check(self, members: ZooMembers, source: str) -> None:
        """Raise SpecError if ``members`` are networks this model cannot read."""

    def prepare(self, members: ZooMembers) -> ZooMembers:
        """Add per-member inputs that can be computed once (``members.extras``); default none."""
        return members

    def fit_inputs(self, members: ZooMembers) -> None:
        """Fit input statistics on prepared training members; most models have none."""

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.kind}: {self.net!r})"


class LayoutMetanet(Metanet):
    """Reads members of one fixed layout, as flat vectors or as a WeightSpace; with ``probe``, the
    WeightSpace gets ``2 S`` more channels: each weight ``(i, j)`` of a layer carries the probe
    values of its output neuron ``i`` and input neuron ``j``, each bias those of its neuron (and
    ``S`` zeros), so channel mixing stays equivariant."""

    def __init__(
        self, kind: str, net: nn.Module, layout: ParamLayout, weight_space: bool, probe: ProbeFeatures | None = None
    ) -> None:
        super().__init__(kind, net)
        self.layout, self.weight_space, self.probe = layout, weight_space, probe

    def check(self, members: ZooMembers, source: str) -> None:
        check_same_layout(members, self.layout, self.kind, source)
        if self.probe is not None:
            self.probe.which(members, source)

    def prepare(self, members: ZooMembers) -> ZooMembers:
        return with_probe_values(self.probe, members)

    def fit_inputs(self, members: ZooMembers) -> None:
        fit_probes(self.probe, members)

    def forward(self, members: ZooMembers) -> Tensor:
        flat = members.flat[:, : self.layout.size]
        if not self.weight_space:
            return self.net(flat)
        ws = WeightSpace.from_flat(flat, self.layout)
        return self.net(ws if self.probe is None else self._with_probes(ws, members))

    def _with_probes(self, ws: WeightSpace, members: ZooMembers) -> WeightSpace:
        feats = probe_features(self.probe, members)
        per_layer = [v.transpose(1, 2) for v in self.probe.layers(feats)]  # [B, S, n_k]
        weights, biases = [], []
        for k, (w, b) in enumerate(zip(ws.weights, ws.biases)):
            rows, cols = per_layer[k + 1][..., None], per_layer[k][:, :, None]
            weights.append(torch.cat([w, rows.expand(-1, -1, *w.shape[2:]), cols.expand(-1, -1, *w.shape[2:])], 1))
            biases.append(torch.cat([b, per_layer[k + 1], torch.zeros_like(per_layer[k + 1])], 1))
        return WeightSpace(tuple(weights), tuple(biases), ws.layout)


class StatMetanet(Metanet):
    """StatNN: per-tensor statistics aligned by slot, so members may differ in architecture."""

    def check(self, members: ZooMembers, source: str) -> None:
        unknown = set(statistic_slots(members.layouts)) - set(self.net.slots)
        if unknown:
            raise SpecError(f"{source}: networks have layers the statnn run never saw ({sorted(unknown)[:3]})")

    @torch.no_grad()
    def prepare(self, members: ZooMembers) -> ZooMembers:
        stats = self.net.statistics(members.flat, members.layouts, members.layout_ids)
        return replace(members, extras={**members.extras, "statistics": stats})

    def fit_inputs(self, members: ZooMembers) -> None:
        self.net.fit_normalization(members.extras["statistics"])

    def forward(self, members: ZooMembers) -> Tensor:
        stats = members.extras.get("statistics")
        if stats is None:
            stats = self.net.statistics(members.flat, members.layouts, members.layout_ids.to(members.flat.device))
        return self.net.head(stats)


class GraphMetanet(Metanet):
    """GMN: members become parameter graphs (any architecture the graph builder knows)."""

    def __init__(self, net: nn.Module, node_dim: int, edge_dim: int, probe: ProbeFeatures | None = None) -> None:
        super().__init__("gmn", net)
        self.node_dim, self.edge_dim, self.probe = node_dim, edge_dim, probe
        self._builders: dict = {}

    def graphs(self, members: ZooMembers):
        from ..paramgraph import build_graphs

        return build_graphs(
            members.flat,
            members.member_layouts(),
            members.member_specs(),
            node_dim=self.node_dim,
            edge_dim=self.edge_dim,
            cache=self._builders,
        )

    def check(self, members: ZooMembers, source: str) -> None:
        node_dim, edge_dim = graph_dims(members, self._builders)
        if node_dim > self.node_dim or edge_dim > self.edge_dim:
            raise SpecError(
                f"{source}: graphs need node/edge features of width {node_dim}/{edge_dim}, the gmn run "
                f"takes {self.node_dim}/{self.edge_dim} (bigger kernels or more norm parameters than it saw)"
            )
        if self.probe is not None:
            check_same_layout(members, self.probe.layout, "gmn with probes", source)
            self.probe.which(members, source)

    def prepare(self, members: ZooMembers) -> ZooMembers:
        return with_probe_values(self.probe, members)

    def fit_inputs(self, members: ZooMembers) -> None:
        fit_probes(self.probe, members)

    def forward(self, members: ZooMembers) -> Tensor:
        graphs = self.graphs(members)
        if self.probe is not None:  # one layout: each graph's nodes are its neurons in order
            feats = probe_features(self.probe, members)
            graphs.x = torch.cat([graphs.x, feats.reshape(-1, feats.shape[-1])], dim=1)
        return self.net(graphs)


def with_probe_values(probe: ProbeFeatures | None, members: ZooMembers) -> ZooMembers:
    """``members`` with their raw probe values in ``extras["probes"]``, computed once per batch."""
    if probe is None:
        return members
    return replace(members, extras={**members.extras, "probes": probe.values(members)})


def fit_probes(probe: ProbeFeatures | None, members: ZooMembers) -> None:
    if probe is not None:
        probe.fit(members.flat, probe.which(members))


def probe_features(probe: ProbeFeatures, members: ZooMembers) -> Tensor:
    """Standardized ``[B, N, S]``: from the values ``prepare`` stored, else computed now."""
    values = members.extras.get("probes")
    return probe(members.flat, probe.which(members)) if values is None else probe.standardize(values)


def graph_dims(members: ZooMembers, cache: dict | None = None) -> tuple[int, int]:
    """Widest node and edge features the members' graphs need."""
    from ..paramgraph import feature_dims

    return feature_dims(members.layouts, members.specs, cache=cache)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelKind:
    """How the trainer builds one kind of metanetwork."""

    name: str
    defaults: dict[str, Any]
    describe: Callable[[ZooMembers, str], dict]  # training members -> input description (JSON)
    build: Callable[[dict, dict, int], Metanet]  # (args, input description, out_features) -> model
    mixed: bool = False  # accepts zoos whose members differ in architecture


def _one_layout(name: str) -> Callable[[ZooMembers, str], dict]:
    def describe(members: ZooMembers, source: str) -> dict:
        check_same_layout(members, members.layouts[0], name, source)
        return {"layout": members.layouts[0].to_dict()}

    return describe


def _layout(info: dict) -> ParamLayout:
    return ParamLayout.from_dict(info["layout"])


def _build_mlp(args: dict, info: dict, out: int) -> Metanet:
    layout = _layout(info)
    return LayoutMetanet("mlp", FlatMLP(layout, out_features=out, **args), layout, weight_space=False)


def _build_deepsets(args: dict, info: dict, out: int) -> Metanet:
    layout = _layout(info)
    return LayoutMetanet("deepsets", DeepSets(layout, out_features=out, **args), layout, weight_space=True)


def _describe_dws(members: ZooMembers, source: str) -> dict:
    info = _one_layout("dws")(members, source)
    try:
        DWSNet(members.layouts[0], depth=1, spec=members.specs[0])  # validates the layout
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None
    return info


def _probe(args: dict, info: dict) -> tuple[dict, ProbeFeatures | None]:
    """The model's own arguments and its probe features (None with ``probes=0``)."""
    args = dict(args)
    count = int(args.pop("probes", 0))
    return args, (ProbeFeatures(info["probe"]) if count else None)


def _build_dws(args: dict, info: dict, out: int) -> Metanet:
    layout = _layout(info)
    args, probe = _probe(args, info)
    channels = 1 + (2 * probe.count if probe is not None else 0)
    net = DWSNet(layout, out_features=out, in_channels=channels, **args)
    return LayoutMetanet("dws", net, layout, weight_space=True, probe=probe)


def _describe_statnn(members: ZooMembers, source: str) -> dict:
    return {"slots": statistic_slots(members.layouts)}


def _build_statnn(args: dict, info: dict, out: int) -> Metanet:
    return StatMetanet("statnn", StatNN([], out_features=out, slots=info["slots"], **args))


def _describe_gmn(members: ZooMembers, source: str) -> dict:
    node_dim, edge_dim = graph_dims(members)
    return {"node_dim": node_dim, "edge_dim": edge_dim}


def _build_gmn(args: dict, info: dict, out: int) -> Metanet:
    from .gmn import GMN

    args, probe = _probe(args, info)
    extra = probe.count if probe is not None else 0
    net = GMN(info["node_dim"] + extra, info["edge_dim"], out_features=out, **args)
    return GraphMetanet(net, info["node_dim"], info["edge_dim"], probe)


MODEL_KINDS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind("mlp", {"hidden": [256, 256], "dropout": 0.1}, _one_layout("mlp"), _build_mlp),
        ModelKind("statnn", {"hidden": [256, 256]}, _describe_statnn, _build_statnn, mixed=True),
        ModelKind("deepsets", {"hidden": 64}, _one_layout("deepsets"), _build_deepsets),
        ModelKind(
            "dws",
            {"hidden_channels": 16, "depth": 3, "dropout": 0.0, "probes": 0},
            _describe_dws,
            _build_dws,
        ),
        ModelKind("gmn", {"hidden": 64, "layers": 4, "probes": 0}, _describe_gmn, _build_gmn, mixed=True),
    )
}


def model_kind(name: str) -> ModelKind:
    if name not in MODEL_KINDS:
        raise SpecError(f"--model {name!r} is unknown; choose one of {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[name]


def build_metanet(name: str, args: dict, info: dict, out_features: int) -> Metanet:
    """Build a metanetwork of kind ``name`` with ``args`` over the defaults; bad args -> SpecError."""
    kind = model_kind(name)
    try:
        return kind.build({**kind.defaults, **args}, info, out_features)
    except TypeError as exc:
        raise SpecError(f"model {name}: bad arguments {args} ({exc}); defaults are {kind.defaults}") from None
