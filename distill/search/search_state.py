"""The evolutionary search's state and its files: ``population.json`` (to resume) and JSON I/O.

``SearchState`` is everything the search loop reads or changes between two candidates; saved
with ``save_state`` and read back with ``load_state`` it continues bit for bit. What a member
is (a backbone structure, or a trained candidate detector) is the ``Codec``'s business: the
zero-shot search stores structures (``STRUCTURES``), the trained levels their own genes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.io import write_text_atomic

from .space import Structure, structure_from_json, structure_to_json

STRUCTURE_FORMAT = "distill-nas-structure/1"
POPULATION_FORMAT = "distill-nas-population/1"
HISTORY_FORMAT = "distill-nas-history/1"
REJECT_REASONS = ("duplicate", "space", "budget")


def structure_key(structure: Structure) -> str:
    """A compact exact key of a structure (one ``class:in:out:stride:kernel:depth:btn`` per
    block): equal keys, equal structures."""
    return "/".join(f"{b.kind}:{b.in_ch}:{b.out_ch}:{b.stride}:{b.kernel}:{b.depth}:"
                    f"{b.bottleneck}" for b in structure)


@dataclass
class Member:
    """A scored member of the population (a structure, or a candidate of a trained search),
    with its measures (params, macs, ...)."""

    structure: Any
    score: float
    measures: dict[str, Any]
    key: str


@dataclass(frozen=True)
class Codec:
    """How members are written to and read from ``population.json``: the file's format name,
    the JSON key of a member's genes, and the two conversions (``decode(json, source)`` returns
    the genes and their key)."""

    format: str
    field: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any, str], tuple[Any, str]]


def _decode_structure(blocks: Any, source: str) -> tuple[Structure, str]:
    structure = structure_from_json(blocks, source=source)
    return structure, structure_key(structure)


def _rank(member: Member) -> tuple[float, str]:
    """Best score first; equal scores in structure-key order (deterministic)."""
    return -member.score, member.key


@dataclass
class SearchState:
    """Population (best first), every structure seen, the RNG, counters and the history."""

    settings: dict[str, Any]
    population: list[Member]
    seen: set[str]
    rng: random.Random
    evaluated: int = 0  # candidates scored (budget-passing, new)
    attempts: int = 0  # mutations tried, rejected ones included
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    rejected_in_a_row: int = 0
    stalled: bool = False
    seconds: float = 0.0
    # per scored candidate: its score, the best score after it, whether it was kept ("0"/"1"
    # characters) and how many mutations it took
    history: dict[str, Any] = field(
        default_factory=lambda: {"score": [], "best": [], "kept": "", "tries": []}
    )
    # every scored member, in order (the trained levels keep it for the Pareto front); None:
    # not kept (the zero-shot search scores thousands)
    archive: list[Member] | None = None
    # ranks the population, best first (default: by score); not saved, the search sets it
    order: Callable[[list[Member]], list[Member]] | None = None

    def add(self, member: Member, size: int) -> bool:
        """Insert a scored candidate, keep the best ``size``; True when it stayed in."""
        self.population.append(member)
        if self.order is not None:
            self.population = self.order(self.population)
        else:
            self.population.sort(key=_rank)
        del self.population[size:]
        kept = any(m is member for m in self.population)
        if self.archive is not None:
            self.archive.append(member)
        self.evaluated += 1
        self.history["score"].append(member.score)
        self.history["best"].append(self.population[0].score)
        self.history["kept"] += "1" if kept else "0"
        self.history["tries"].append(self.rejected_in_a_row + 1)
        self.rejected_in_a_row = 0
        return kept


def dumps(data: dict[str, Any]) -> str:
    """JSON text with one top-level key per line, and one line per item of a list of objects
    (e.g. blocks); everything else on its key's line."""
    lines = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join(f"  {json.dumps(v)}" for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` (see ``dumps``) atomically: a reader never sees half a file."""
    write_text_atomic(path, dumps(data))


STRUCTURES = Codec(POPULATION_FORMAT, "blocks", structure_to_json, _decode_structure)


def _members_json(members: list[Member], codec: Codec) -> list[dict[str, Any]]:
    return [{codec.field: codec.encode(m.structure), "score": m.score, "measures": m.measures}
            for m in members]


def _members(items: Any, codec: Codec, source: str) -> list[Member]:
    members = []
    for i, item in enumerate(items):
        genes, key = codec.decode(item[codec.field], f"{source}[{i}]")
        members.append(Member(genes, float(item["score"]), dict(item["measures"]), key))
    return members


def save_state(path: Path, state: SearchState, codec: Codec = STRUCTURES) -> None:
    """Write ``state`` to ``path`` (``population.json``) atomically."""
    version, internal, gauss = state.rng.getstate()
    archive = {} if state.archive is None else {"archive": _members_json(state.archive, codec)}
    write_json(path, {
        "format": codec.format,
        "settings": state.settings,
        "population": _members_json(state.population, codec),
        "evaluated": state.evaluated,
        "attempts": state.attempts,
        "rejected": state.rejected,
        "rejected_in_a_row": state.rejected_in_a_row,
        "stalled": state.stalled,
        "seconds": state.seconds,
        "rng": {"version": version, "internal": list(internal), "gauss": gauss},
        "history": state.history,
        "seen": sorted(state.seen),
        **archive,
    })


def load_state(path: Path, codec: Codec = STRUCTURES) -> SearchState:
    """Read a ``population.json`` written by ``save_state``; errors name the file."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); start a new search without "
                         "--resume") from err
    if not isinstance(data, dict) or data.get("format") != codec.format:
        raise ValueError(f"{path}: not a population file of format {codec.format}")
    try:
        population = _members(data["population"], codec, f"{path}: population")
        archive = None
        if "archive" in data:
            archive = _members(data["archive"], codec, f"{path}: archive")
        rng = random.Random()
        saved = data["rng"]
        rng.setstate((saved["version"], tuple(saved["internal"]), saved["gauss"]))
        return SearchState(
            settings=data["settings"], population=population, seen=set(data["seen"]), rng=rng,
            evaluated=int(data["evaluated"]), attempts=int(data["attempts"]),
            rejected={**dict.fromkeys(REJECT_REASONS, 0), **data["rejected"]},
            rejected_in_a_row=int(data["rejected_in_a_row"]), stalled=bool(data["stalled"]),
            seconds=float(data["seconds"]), history=data["history"], archive=archive,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: malformed population file ({type(err).__name__}: {err}); "
                         "start a new search without --resume") from err


def settings_differences(saved: Any, current: Any, prefix: str = "search") -> list[str]:
    """One line per setting that differs, e.g. ``search.seed: population.json has 0, the
    recipe now 1`` (nested mappings are compared key by key)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current)):
            found += settings_differences(saved.get(key), current.get(key), f"{prefix}.{key}")
        return found
    if saved == current:
        return []
    return [f"{prefix}: population.json has {saved!r}, the recipe now {current!r}"]
