"""Everything that defines a JTM run (:class:`JTMConfig`, saved as ``config.json``) and what
each round of the joint loop measured (:class:`IterationRecord`).

:class:`JTMConfig` is the one source of defaults: the command line derives its options from
its fields (each field's ``help`` metadata is the option's help), and the experiment runner,
the demo and :func:`jtm_rs.learn_tree` read their defaults from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from .data import MAX_BEHAVIOURS
from .exceptions import InvalidInputError

INITIAL_TREES = ("auto", "category", "kmeans", "sasrec", "random")
TREE_LEARNINGS = ("jtm", "clustering", "none")
TREE_CHANGES = ("auto", "keep", "carry", "warm", "fresh")
WEIGHTS_PRECISIONS = ("auto", "float32", "bfloat16")
PSEUDO_TARGETS = ("max-heap", "optimal")
#: Training losses (:func:`jtm_rs.training.train_epoch`).
LOSSES = ("bce", "softmax")
#: The tree levels training samples come from: every level (eq. 2), or the items alone.
LEVELS_TRAINED = ("all", "leaves")
#: The (user, node) scorers: the paper's window averages + MLP, or self-attention over the
#: behaviour sequence read by the node (:class:`jtm_rs.sequence_model.SequenceNodeModel`).
MODELS = ("windows", "sequence")


def _opt(default, help: str, **kw):
    """A field with its command-line help; ``choices`` too where the values are fixed."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class JTMConfig:
    """Everything that defines a JTM run (saved with the model)."""

    arity: int = _opt(2, "children per tree node")
    embedding_dim: int = _opt(24, "width of the node embeddings")
    hidden: Tuple[int, ...] = _opt((128, 64, 24), "widths of the MLP's hidden layers")
    hierarchical: bool = _opt(True, "JTM-H: behaviours at level l are their ancestors at l (False, JTM-J: the leaves)")
    attention: bool = _opt(False, "DIN activation unit over the behaviours (the TDM model)")
    model: str = _opt(
        "windows", "the scorer: 'windows' (the paper's: 10 time-window averages + MLP) or 'sequence' (causal "
        "self-attention over the behaviours, read by a node-query attention, then an MLP)", choices=MODELS)
    sequence_dim: int = _opt(32, "the sequence model's width (its node embeddings and encoder)")
    sequence_blocks: int = _opt(1, "the sequence model's Transformer blocks")
    sequence_dropout: float = _opt(0.0, "the sequence model's dropout (as the windows model, none by default)")
    # 5 rather than 3: higher validation recall on three of the four development sets (3
    # seeds) at ~1.4x the fit; JTM keeps improving with more rounds where JTM-H levels off
    # (docs/ablations.md, "Five tree learnings").
    iterations: int = _opt(5, "tree learnings in the joint loop; the model is trained iterations + 1 times")
    epochs: int = _opt(1, "passes over the training examples per model training")
    max_examples_per_epoch: Optional[int] = _opt(
        None, "training examples drawn (without replacement) per epoch; None: all (the main bound on time)")
    # 120 rather than 60: higher validation recall on all four development sets at ~1.3x the
    # fit time; 200 higher still on three, at ~1.8-2x (docs/ablations.md).
    negatives: Union[int, List[int]] = _opt(
        120, "negatives per example in total (spread over levels, more near the leaves), or one count per level")
    # 8192 at 8e-3 (the learning rate scaled with the batch) trains ~1.5x faster than 2048 at
    # 2e-3, same validation recall within noise (docs/ablations.md).
    batch_size: int = _opt(8192, "samples per optimiser step (whole examples, ~135 samples each on a 15-level tree)")
    learning_rate: float = _opt(8e-3, "Adam's step size")
    # 4, chosen on validation users over 2..7: level with 7 in recall, tree learning 3-5x
    # cheaper, and the eq. 2 objective falls at every tree learning (docs/ablations.md).
    d: int = _opt(4, "levels per tree-learning segment (the paper's d)")
    max_samples_per_item: Optional[int] = _opt(8, "training samples per item scored in tree learning (None: all)")
    stay_bonus: float = _opt(
        1.0, "tree learning: nats per training example added to an item's old place in every segment but the last (0: the paper)")
    weights_precision: str = _opt(
        "auto", "arithmetic of tree learning's scoring ('auto': bfloat16 where the device has it natively)",
        choices=WEIGHTS_PRECISIONS)
    # With the Rust scoring pass, bfloat16 kept 99.56-99.74 % of float32's top 200 and the same
    # recall within 0.06 points on the four development sets x 3 seeds, 1.08x float32's speed
    # for one user a search and 1.3-1.4x for batches (docs/performance.md): on where native.
    retrieval_precision: str = _opt(
        "auto", "arithmetic of retrieval's scoring, beam search and brute force ('auto': bfloat16 where the "
        "device has it natively)", choices=WEIGHTS_PRECISIONS)
    initial_tree: str = _opt(
        "auto", "'category' (paper), 'kmeans' (balanced k-means over co-occurrence embeddings, TDM's), 'sasrec' (balanced "
        "k-means over the item embeddings of a SASRec fitted first), 'random'; "
        "'auto': category when the data has categories, else kmeans", choices=INITIAL_TREES)
    tree_learning: str = _opt(
        "jtm", "between trainings: 'jtm' (Algorithm 2), 'clustering' (TDM: k-means over the leaf embeddings) or "
        "'none' (the initial tree stays, as JTM-H)", choices=TREE_LEARNINGS)
    on_tree_change: str = _opt(
        "auto", "what the model keeps when the tree changes: 'keep' (all, the paper), 'carry' (node embeddings move "
        "with their items), 'warm' (new node embeddings), 'fresh' (new model); 'auto': keep after Algorithm 2, "
        "carry after clustering", choices=TREE_CHANGES)
    beam_samples: int = _opt(
        0, "beam-aware training (OTM): each batch also trains on the nodes a beam of this width, searched with the "
        "current model, expands, and on the siblings of the targets' ancestors (0: off)")
    beam_weight: float = _opt(
        0.1, "weight in the loss of each beam-aware sample relative to a uniform one (1: all alike)")
    beam_targets: int = _opt(
        1, "the user's next items that label the beam-aware samples: a sample is 1 where one of them is below it "
        "(1: the target alone, so every beam sample but the target's ancestors is 0)")
    pseudo_targets: str = _opt(
        "max-heap", "labels of the targets' ancestors: 'max-heap' (1, the paper) or 'optimal' (OTM's estimate: 1 only "
        "where the model's greedy descent from the ancestor reaches the target)", choices=PSEUDO_TARGETS)
    loss: str = _opt(
        "bce", "training loss: 'bce' (paper eq. 2: binary cross-entropy per sample) or 'softmax' (per example and "
        "level, the target's ancestor against that level's negatives)", choices=LOSSES)
    levels_trained: str = _opt(
        "all", "levels the model is trained on: 'all' (the target's ancestors and negatives at every level, eq. 2) or "
        "'leaves' (the items alone, every negative an item: the paper's DNN baseline, retrieved by brute force)",
        choices=LEVELS_TRAINED)
    max_behaviours: int = _opt(MAX_BEHAVIOURS, "most recent behaviours the model sees")
    objective_examples: int = _opt(4000, "examples in the fixed sample on which the eq. 2 objective is tracked")
    validation_m: int = _opt(200, "M of the validation Precision/Recall/F@M recorded each round")
    validation_users: Optional[int] = _opt(2000, "validation users measured each round (None: all)")
    seed: int = _opt(0, "seed of the model, the sampling and the tree")
    # update_training="auto" trains the node rows on the new items' paths (2 passes at 8e-3, 10 old
    # examples replayed per new one: chosen on validation users of Beauty, Toys and Sports by the
    # new-item protocol) where most new behaviours are on new items, else the whole model (1 pass
    # at 4e-3, replay 1: a behaviour-dominated update at 10^6 items and on MovieLens); None takes
    # the chosen mode's value (docs/lifecycle.md).
    update_replay: Optional[float] = _opt(
        None, "update(): old examples replayed per new example, drawn from the replay data given (so the model "
        "does not forget); none: 10 where the node rows on the new paths train, 1 where the whole model does",
        kind=float)
    update_epochs: Optional[int] = _opt(
        None, "update(): passes over the new and replayed examples; none: 2 (new paths) or 1 (whole model)", kind=int)
    update_learning_rate: Optional[float] = _opt(
        None, "update(): Adam's step size while training on the new behaviours; none: 8e-3 (new paths) or 4e-3 "
        "(whole model)", kind=float)
    update_tree_learning: str = _opt(
        "auto", "update(): Algorithm 2 over the 'whole' tree (which places the new items by the model), over the "
        "'new' items (the others held in their subtrees at the top of the last segment, re-sorted within them), "
        "over the 'new-only' (the others held at their leaves and not scored: the cost grows with the new items), "
        "'none' (new items stay where their neighbourhood put them), or 'auto': new where the new paths train, "
        "new-only where the whole model does", choices=("auto", "whole", "new", "new-only", "none"))
    update_training: str = _opt(
        "auto", "update(): what trains on the new behaviours: the node rows on the 'new-paths' (from the root "
        "to the leaves of the items the new behaviours are on; the MLP and every other row held), the whole "
        "'model', only the 'new-leaves' (the new items' leaf rows, at the leaf level), or 'auto': new-paths where "
        "at least half the new behaviours are on items new to the model, else model",
        choices=("auto", "new-paths", "model", "new-leaves"))
    update_tree_learning_first: bool = _opt(
        True, "update(): tree learning before training (the model then trains for the places learned) instead of "
        "after it")
    update_leaf_passes: int = _opt(
        0, "update(): passes after training in which only the new items' leaf rows learn, at the leaf level, "
        "over the same examples")

    def __post_init__(self) -> None:
        if self.arity < 2:
            raise InvalidInputError(f"arity must be at least 2, got {self.arity}")
        if self.iterations < 0 or self.epochs < 1 or self.batch_size < 1 or self.d < 1:
            raise InvalidInputError("iterations must be >= 0; epochs, batch_size and d >= 1")
        if self.beam_samples < 0:
            raise InvalidInputError(f"beam_samples must be >= 0 (0: off), got {self.beam_samples}")
        if self.loss == "softmax" and self.beam_aware:
            raise InvalidInputError("loss='softmax' does not combine with beam-aware training (beam_samples, "
                                    "pseudo_targets='optimal')")
        if self.levels_trained == "leaves" and (self.tree_learning != "none" or self.beam_aware):
            raise InvalidInputError("levels_trained='leaves' trains no inner node, so it needs tree_learning='none' "
                                    "and no beam-aware training (retrieve with method='brute_force')")
        if self.model == "sequence" and self.attention:
            raise InvalidInputError("model='sequence' has its own node attention; attention=True is the windows model's")
        if self.sequence_dim < 2 or self.sequence_dim % 2 or self.sequence_blocks < 1 or not 0 <= self.sequence_dropout < 1:
            raise InvalidInputError("sequence_dim must be even and >= 2, sequence_blocks >= 1, sequence_dropout in [0, 1)")
        if (self.update_replay is not None and not self.update_replay >= 0) or self.update_leaf_passes < 0 \
                or (self.update_learning_rate is not None and not self.update_learning_rate > 0) \
                or (self.update_epochs is not None and self.update_epochs < 1):
            raise InvalidInputError("update_replay must be >= 0, update_learning_rate > 0, update_epochs >= 1 and "
                                   "update_leaf_passes >= 0")
        if self.beam_targets < 1:
            raise InvalidInputError(f"beam_targets must be >= 1, got {self.beam_targets}")
        if not self.beam_weight > 0:
            raise InvalidInputError(f"beam_weight must be > 0, got {self.beam_weight}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise InvalidInputError(f"{f.name} must be one of {choices}, got {getattr(self, f.name)!r}")
        self.hidden = tuple(self.hidden)

    @property
    def beam_aware(self) -> bool:
        """Whether training adds beam-aware samples (:mod:`jtm_rs.beam_training`)."""
        return self.beam_samples > 0 or self.pseudo_targets == "optimal"

    def changed(self) -> Dict[str, object]:
        """The fields that differ from the defaults."""
        default = dataclasses.asdict(JTMConfig())
        return {k: v for k, v in dataclasses.asdict(self).items() if default.get(k) != v}


#: The paper's model-based rows as configurations (Table 1); ``JTM.name`` is the first match.
VARIANTS: Dict[str, dict] = {
    "jtm": dict(hierarchical=True, tree_learning="jtm"),
    "jtm-j": dict(hierarchical=False, tree_learning="jtm"),
    "jtm-h": dict(hierarchical=True, tree_learning="none"),
    "jtm-otm": dict(hierarchical=True, tree_learning="jtm", beam_samples=4, pseudo_targets="optimal"),
    "tdm": dict(hierarchical=False, attention=True, tree_learning="clustering"),
    # JTM with the sequence model: self-attention over the hierarchical behaviours, read by the node.
    "jtm-seq": dict(hierarchical=True, tree_learning="jtm", model="sequence"),
    # The paper's DNN: the same network trained on the items alone (no tree; the random one
    # only numbers the items' embeddings), retrieved by brute force (jtm_rs.jtm.BruteForce).
    "item-dnn": dict(hierarchical=False, tree_learning="none", levels_trained="leaves", initial_tree="random"),
}


def variant_name(config: JTMConfig) -> str:
    """The Table 1 row ``config`` is, by :data:`VARIANTS` (attention and beam-aware training
    off unless named)."""
    unnamed = {"attention": False, "beam_samples": 0, "pseudo_targets": "max-heap", "levels_trained": "all",
               "model": "windows"}
    for name, settings in VARIANTS.items():
        if all(getattr(config, k) == v for k, v in {**unnamed, **settings}.items()):
            return name
    return "jtm"


@dataclass
class IterationRecord:
    """What one round of the joint loop measured (``JTM.history``)."""

    iteration: int
    train_loss: float
    #: Eq. 2 per example on the fixed sample, model and tree as trained together.
    objective: float
    #: Same, after the tree was re-learned with the model fixed (None after the last training).
    objective_after_tree_learning: Optional[float] = None
    #: The two objectives level by level (entry j-1: level j), to see which segment moved.
    objective_by_level: List[float] = field(default_factory=list)
    objective_by_level_after_tree_learning: List[float] = field(default_factory=list)
    validation: Dict[str, float] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    #: Processes the round trained over (torch.distributed's world size; 1 without it).
    world_size: int = 1

    def describe(self) -> str:
        v = self.validation
        val = f" | valid P/R/F {v['precision']:.4f}/{v['recall']:.4f}/{v['f_measure']:.4f}" if v else ""
        return (f"round {self.iteration}: trained in {self.seconds['train']:.1f} s, loss {self.train_loss:.4f}, "
                f"objective {self.objective:.3f}{val}")


__all__ = ["JTMConfig", "IterationRecord", "VARIANTS", "variant_name"]
