"""SM-NAS structural level: a candidate detector as genes, and the space they are drawn from.

A ``Candidate`` is the combination SM-NAS searches first: backbone, neck (kind, width, depth,
top level), head (depth, width) and input resolution; at the modular level it also carries a
backbone channel plan. ``model_spec`` turns it into the ``model`` section of a recipe (the
``smnas`` model), so a search result trains with `distill train` like any preset. Nothing here
imports torch: sampling, mutation and crossover cost microseconds.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from distill.search_config import StructuralSpaceConfig

NECKS: tuple[str, ...] = ("bifpn", "fpn", "repgfpn")  # the smnas model builds them
MAX_LEVELS: tuple[int, ...] = (5, 6, 7)  # top pyramid level: P3-P5, P3-P6, P3-P7
GENES: tuple[str, ...] = ("backbone", "neck", "neck_width", "neck_depth", "max_level",
                          "head_depth", "head_width", "image_size")
# the space's list of allowed values for each gene
GENE_LISTS: dict[str, str] = {
    "backbone": "backbones", "neck": "necks", "neck_width": "neck_widths",
    "neck_depth": "neck_depths", "max_level": "max_levels", "head_depth": "head_depths",
    "head_width": "head_widths", "image_size": "image_sizes",
}


@dataclass(frozen=True)
class Candidate:
    """One student detector of the search (see the module docstring)."""

    backbone: str
    neck: str
    neck_width: int
    neck_depth: int
    max_level: int
    head_depth: int
    head_width: int
    image_size: int
    channel_plan: str | None = None

    @property
    def key(self) -> str:
        """A compact exact key, e.g. ``tinynet_e/bifpn24x1/P7/head2x24/128``."""
        plan = f"/plan {self.channel_plan}" if self.channel_plan else ""
        return (f"{self.backbone}/{self.neck}{self.neck_width}x{self.neck_depth}/"
                f"P{self.max_level}/head{self.head_depth}x{self.head_width}/"
                f"{self.image_size}{plan}")

    def to_json(self) -> dict[str, Any]:
        """The genes as a JSON object."""
        return asdict(self)


def candidate_from_json(data: Any, source: str = "candidate") -> Candidate:
    """A ``Candidate`` from ``to_json`` output; a missing or unknown gene raises ``ValueError``."""
    names = {f.name for f in fields(Candidate)}
    if not isinstance(data, dict) or set(data) - names or set(GENES) - set(data):
        raise ValueError(f"{source}: expected an object with the genes {sorted(names)}, got "
                         f"{data!r}")
    return Candidate(**data)


def model_spec(candidate: Candidate) -> dict[str, Any]:
    """The recipe ``model`` section that builds ``candidate`` (the ``smnas`` model, from
    scratch: ``pretrained: false``)."""
    options: dict[str, Any] = {
        "neck": candidate.neck,
        "fpn_channels": candidate.neck_width,
        "fpn_repeats": candidate.neck_depth,
        "max_level": candidate.max_level,
        "head_repeats": candidate.head_depth,
    }
    if candidate.neck != "bifpn":
        options["head_width"] = candidate.head_width
    if candidate.channel_plan:
        options["channel_plan"] = candidate.channel_plan
    return {"name": "smnas", "image_size": candidate.image_size, "pretrained": False,
            "backbone": candidate.backbone, "options": options}


def canonical(candidate: Candidate) -> Candidate:
    """The one form of equal detectors: bifpn heads run at the neck's width, an fpn neck is one
    pass deep. Two candidates that build the same model get the same key."""
    if candidate.neck == "bifpn":
        candidate = replace(candidate, head_width=candidate.neck_width)
    if candidate.neck == "fpn":
        candidate = replace(candidate, neck_depth=1)
    return candidate


@dataclass
class StructuralSpace(StructuralSpaceConfig):
    """`distill search --level structural`: the values each gene may take (the recipe's
    ``search.structural``, ``StructuralSpaceConfig``: the fields and defaults) and how
    candidates are drawn, mutated and crossed from them."""

    @classmethod
    def from_config(cls, cfg: Any) -> StructuralSpace:
        """The space of a recipe's ``search.structural`` section (missing keys: defaults)."""
        return cls(**{f.name: list(getattr(cfg, f.name)) for f in fields(cls)
                      if hasattr(cfg, f.name)})

    def values(self, gene: str) -> list[Any]:
        """The allowed values of ``gene``."""
        return list(getattr(self, GENE_LISTS[gene]))

    def size(self) -> int:
        """How many distinct candidates the space holds (after ``canonical``)."""
        return len({canonical(c).key for c in self._all()})

    def _all(self) -> list[Candidate]:
        found = [{}]
        for gene in GENES:
            found = [{**genes, gene: v} for genes in found for v in self.values(gene)]
        return [Candidate(**genes) for genes in found]

    def problems(self, candidate: Candidate) -> list[str]:
        """Every gene of ``candidate`` outside this space (empty when it is inside)."""
        candidate = canonical(candidate)
        found = []
        for gene in GENES:
            value = getattr(candidate, gene)
            skip = (gene == "head_width" and candidate.neck == "bifpn") or (
                gene == "neck_depth" and candidate.neck == "fpn")
            if not skip and value not in self.values(gene):
                found.append(f"{gene}: {value!r} not in search.structural.{GENE_LISTS[gene]}")
        return found

    def sample(self, rng: random.Random) -> Candidate:
        """A uniformly drawn candidate (each gene independently)."""
        return canonical(Candidate(**{gene: rng.choice(self.values(gene)) for gene in GENES}))

    def mutate(self, candidate: Candidate, rng: random.Random, tries: int = 100) -> Candidate:
        """A copy with one gene changed to another allowed value (a gene the neck ignores is
        not picked), so the model differs."""
        for _ in range(tries):
            gene = rng.choice(GENES)
            others = [v for v in self.values(gene) if v != getattr(candidate, gene)]
            if not others:
                continue
            child = canonical(replace(candidate, **{gene: rng.choice(others)}))
            if child != candidate:
                return child
        raise RuntimeError(f"no mutation of {candidate.key} found in {tries} tries: "
                           "the structural space has one value per gene")

    def crossover(self, a: Candidate, b: Candidate, rng: random.Random) -> Candidate:
        """Uniform crossover: each gene from ``a`` or ``b`` with equal odds."""
        genes = {gene: getattr(a if rng.random() < 0.5 else b, gene) for gene in GENES}
        return canonical(Candidate(**genes))
