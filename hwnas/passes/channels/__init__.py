"""Which channels must be pruned together: the analysis behind `prune-channels`.

Structured pruning works on *channel atoms*: one atom per channel of every tensor that
carries channels (NCHW axis 1, the feature axis of a matrix). Ops tie atoms together, as
DepGraph (Fang et al., CVPR 2023) does with layers: element-wise ops and BatchNorm tie
channel c of their inputs and output, a residual Add ties its branches, Concat and Split
tie at offsets, Flatten ties channel c to its c·HW … (c+1)·HW − 1 features, a depthwise
convolution ties each input channel to its filters, a grouped convolution ties the channels
at the same position of every group (so the groups stay equal). A connected component of
atoms is one channel that can only be removed whole; components are grouped by the layers
that produce them (a residual stage's convolutions form one group, pruned together). A
component that touches a graph output, an op hwnas does not know how to slice, or a tensor
shared in a way that cannot be sliced consistently is kept.

- `weights`: the layers pruning edits, and `private_weights` (run it before analysing).
- `analysis`: atoms, ties, components, groups, importance and `remove`; `@channel_rule`.
- `rules`: one rule per op or op family (`@channel_rule("Conv")`), and the generic rules of
  the registry's channel categories; an op with neither blocks the channels it reads.
- `prune`: `prune_channels` and the ratio helpers the pass and its policies share.
"""

from hwnas.passes.channels import rules as rules
from hwnas.passes.channels.analysis import (
    ChannelAnalysis,
    ChannelGroup,
    Fixup,
    Removed,
    Rule,
    Slice,
    channel_rule,
    rule_for,
)
from hwnas.passes.channels.prune import (
    channel_groups,
    check_ratio,
    group_ratios,
    parse_ratios,
    prune_channels,
    ratios_toward,
    shortfalls,
)
from hwnas.passes.channels.weights import LAYERS, private_weights, set_const, weight_nodes, weight_of

__all__ = [
    "LAYERS", "ChannelAnalysis", "ChannelGroup", "Fixup", "Removed", "Rule", "Slice", "channel_groups",
    "channel_rule", "check_ratio", "group_ratios", "parse_ratios", "private_weights", "prune_channels",
    "ratios_toward", "rule_for", "rules", "set_const", "shortfalls", "weight_nodes", "weight_of",
]
