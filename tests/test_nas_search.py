"""MAE-NAS evolutionary search: budgets, reproducibility, resume, de-duplication, CLI output."""

import json
from pathlib import Path

import pytest
import torch

from distill.cli import main
from distill.config import load_recipe
from distill.errors import RecipeError
from distill.search.latency import LatencyTable, required_keys, structure_latency_ms, table_key
from distill.search.measure import conv_out_size, structure_layers, structure_macs, structure_params
from distill.search.search_state import structure_key
from distill.search.space import ConvSpec, SearchSpace, structure_from_json
from distill.search.zero_shot import (
    current_device,
    load_structure,
    run_search,
    search_settings,
    space_from_config,
)
from distill.search_config import SearchConfig
from students.nas.backbone import NasBackbone

FAST = ["search.score=closed_form", "search.population=16", "search.candidates=120",
        "search.checkpoint_every=20", "search.image_size=160"]


def settings(tmp_path: Path, *overrides: str, out: str = "search"):
    """A fast search config (closed-form score) and its output folder under ``tmp_path``."""
    recipe = load_recipe(None, [f"output_dir={tmp_path}", *FAST, *overrides])
    cfg, _ = search_settings(recipe)
    return cfg, tmp_path / out


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def population(out: Path) -> list:
    return [structure_from_json(m["blocks"]) for m in read(out / "population.json")["population"]]


def synthetic_table(space: SearchSpace, image_size: int, ms_per_mmac: float = 0.01) -> LatencyTable:
    """A latency table whose ms grow with each conv's multiply-adds, plus 0.01 ms overhead."""
    channels = [8, 16, 32, 64, 128, 256, 512]
    entries = {}
    for kernel, stride, size in required_keys(space, image_size):
        out = conv_out_size(size, ConvSpec(1, 1, kernel, stride))
        entries[table_key(kernel, stride, size)] = [
            [0.01 + ms_per_mmac * cin * cout * kernel * kernel * out * out / 1e6
             for cout in channels] for cin in channels
        ]
    return LatencyTable(device="synthetic", image_size=image_size, channels=channels,
                        entries=entries)


def test_recipe_space_keys_reach_the_search_space(tmp_path):
    assert space_from_config(SearchConfig().space) == SearchSpace()
    cfg, _ = settings(tmp_path, "search.space.kernels=[3,7]", "search.space.max_depth=4")
    space = space_from_config(cfg.space)
    assert space.kernels == [3, 7] and space.max_depth == 4


def test_params_macs_and_layers_budgets_are_never_exceeded(tmp_path):
    budget = {"params": 400_000, "macs": 60_000_000, "layers": 30}
    cfg, out = settings(tmp_path, *(f"search.budget.{k}={v}" for k, v in budget.items()))
    result = run_search(cfg, out, progress=False)
    history = read(out / "history.json")
    assert result.candidates == 120 and history["candidates"] == 120
    assert history["rejected"]["budget"] > 0  # the budget did bind
    members = population(out) + [load_structure(out / "structure.json")]
    assert len(members) == 17
    for structure in members:
        assert structure_params(structure) <= budget["params"]
        assert structure_macs(structure, 160) <= budget["macs"]
        assert structure_layers(structure) <= budget["layers"]
    stored = read(out / "structure.json")
    assert stored["measures"]["macs"] == structure_macs(result.structure, 160)
    assert stored["budget"] == {**budget, "latency_ms": None}
    # the search made progress: the result beats the starting structure
    assert stored["score"] > history["score"][0]
    assert stored["score"] == pytest.approx(max(history["best"]), abs=1e-6)


def test_latency_budget_with_a_measured_table_is_never_exceeded(tmp_path):
    table = synthetic_table(SearchSpace(), 160)
    table.save(tmp_path / "table.json")
    cfg, out = settings(tmp_path, "search.budget.latency_ms=0.6",
                        f"search.latency_table={tmp_path / 'table.json'}")
    run_search(cfg, out, progress=False)
    assert read(out / "history.json")["rejected"]["budget"] > 0
    for structure in population(out) + [load_structure(out / "structure.json")]:
        assert structure_latency_ms(structure, 160, table) <= 0.6
    assert read(out / "structure.json")["measures"]["latency_ms"] <= 0.6
    cfg, out = settings(tmp_path, "search.budget.latency_ms=0.6", "search.image_size=128",
                        f"search.latency_table={tmp_path / 'table.json'}", out="other")
    with pytest.raises(RecipeError, match="measured at image size 160"):
        run_search(cfg, out, progress=False)


def test_latency_budget_without_a_table_says_how_to_make_one(tmp_path):
    cfg, out = settings(tmp_path, "search.budget.latency_ms=5")
    with pytest.raises(RecipeError, match="distill search RECIPE --profile"):
        run_search(cfg, out, progress=False)
    assert not out.exists()  # stopped before any work


def test_same_seed_same_structure_other_seed_other_search(tmp_path):
    budget = "search.budget.macs=60000000"
    runs = []
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        cfg, out = settings(tmp_path, budget, f"search.seed={seed}", out=name)
        run_search(cfg, out, progress=False)
        runs.append((read(out / "structure.json"), read(out / "history.json")))
    (first, hist_a), (again, hist_b), (other, hist_c) = runs
    assert first["blocks"] == again["blocks"] and first["score"] == again["score"]
    assert hist_a == hist_b
    assert hist_c["score"] != hist_a["score"]  # another seed explores other structures


def test_entropy_search_is_reproducible(tmp_path):
    tiny = ["search.score=entropy", "search.score_image_size=32", "search.score_batch=1",
            "search.repeats=1", "search.candidates=25", "search.budget.macs=60000000"]
    blocks = []
    for name in ("a", "b"):
        cfg, out = settings(tmp_path, *tiny, out=name)
        run_search(cfg, out, progress=False)
        blocks.append(read(out / "structure.json")["blocks"])
        assert read(out / "structure.json")["score_kind"] == "entropy"
    assert blocks[0] == blocks[1]


def test_population_has_no_duplicates_and_nothing_is_scored_twice(tmp_path):
    cfg, out = settings(tmp_path, "search.budget.macs=30000000", "search.candidates=200")
    run_search(cfg, out, progress=False)
    keys = [structure_key(s) for s in population(out)]
    assert len(keys) == len(set(keys)) == 16
    state = read(out / "population.json")
    assert state["rejected"]["duplicate"] > 0  # duplicates did come up and were dropped
    # every attempt that was not a duplicate added one new structure to the seen set
    assert len(state["seen"]) == 1 + state["attempts"] - state["rejected"]["duplicate"]
    assert len(state["history"]["score"]) == 200


def _strip_time(structure: dict) -> dict:
    return {k: v for k, v in structure.items() if k != "search_seconds"}


def test_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    budget = "search.budget.macs=60000000"
    cfg, whole = settings(tmp_path, budget, out="whole")
    run_search(cfg, whole, progress=False)

    cfg_half, split = settings(tmp_path, budget, "search.candidates=60", out="split")
    assert run_search(cfg_half, split, progress=False).candidates == 60
    cfg, _ = settings(tmp_path, budget, out="split")
    run_search(cfg, split, resume=True, progress=False)
    for name in ("structure.json", "history.json"):
        assert _strip_time(read(split / name)) == _strip_time(read(whole / name)), name

    # Ctrl-C in the middle of scoring: the state is saved without the interrupted candidate
    import distill.search.score as score_module

    calls, real = [0], score_module.score

    def interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 77:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(score_module, "score", interrupted)
    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, broken, progress=False)
    assert read(broken / "population.json")["evaluated"] == 75  # the initial + 75 scored
    monkeypatch.setattr(score_module, "score", real)
    run_search(cfg, broken, resume=True, progress=False)
    for name in ("structure.json", "history.json"):
        assert _strip_time(read(broken / name)) == _strip_time(read(whole / name)), name


@pytest.mark.parametrize("change, key", [
    ("search.seed=3", "search.seed"),
    ("search.budget.macs=50000000", "search.budget.macs"),
    ("search.space.kernels=[3]", "search.space.kernels"),
    ("search.stage_weights=[0,0,1,1,5]", "search.stage_weights"),
])
def test_resume_with_other_settings_names_the_setting(tmp_path, change, key):
    cfg, out = settings(tmp_path, "search.budget.macs=60000000", "search.candidates=20")
    run_search(cfg, out, progress=False)
    cfg, out = settings(tmp_path, "search.budget.macs=60000000", change)
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        run_search(cfg, out, resume=True, progress=False)


def test_resume_needs_a_population_file(tmp_path):
    cfg, out = settings(tmp_path)
    with pytest.raises(FileNotFoundError, match="population.json"):
        run_search(cfg, out, resume=True, progress=False)


def test_initial_structure_over_the_budget_names_the_budget(tmp_path):
    cfg, out = settings(tmp_path, "search.budget.macs=1000000")
    with pytest.raises(RecipeError, match=r"search\.budget\.macs") as err:
        run_search(cfg, out, progress=False)
    assert "search.initial" in str(err.value)


@pytest.mark.parametrize("override, expected", [
    ("search.budget.macs=-5", "'search.budget.macs' is -5"),
    ("search.budget.params=0", "'search.budget.params' is 0"),
    ("search.stage_weights=[1,1]", "'search.stage_weights' has 2 values"),
    ("search.population=1", "'search.population' is 1"),
    ("search.candidates=0", "'search.candidates' is 0"),
    ("search.score=flops", "'search.score' is 'flops'"),
    ("search.space.block_kinds=[k1kx,mbconv]", "'search.space.block_kinds'"),
    ("search.initial=[16,24]", "'search.initial' has 2 widths"),
])
def test_bad_search_settings_stop_at_load_time(override, expected):
    with pytest.raises(RecipeError) as err:
        load_recipe(None, [override])
    assert expected in str(err.value)


def test_search_settings_do_not_change_the_teacher_cache(tmp_path):
    from distill.stages import teacher_cache_dir

    base = teacher_cache_dir(load_recipe(None, [f"output_dir={tmp_path}"]))
    other = load_recipe(None, [f"output_dir={tmp_path}", "search.seed=4", "search.population=8"])
    assert teacher_cache_dir(other) == base


def test_load_structure_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_structure(bad)
    empty = tmp_path / "empty.json"
    empty.write_text('{"format": "distill-nas-structure/1"}')
    with pytest.raises(ValueError, match="empty.json"):
        load_structure(empty)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_structure(tmp_path / "missing.json")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([b.to_json() for b in SearchSpace().initial()]))
    assert load_structure(bare) == SearchSpace().initial()


def test_cli_search_writes_a_structure_the_backbone_builds(tmp_path, capsys):
    recipe = tmp_path / "search.yaml"
    recipe.write_text(f"name: nas\noutput_dir: {tmp_path}\nsearch:\n  score: closed_form\n"
                      "  population: 8\n  candidates: 40\n  budget: {macs: 3e8}\n")
    assert main(["search", str(recipe), "search.seed=2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "nas" / "search" / "structure.json"
    assert str(path) in out and "MACs" in out
    stored = read(path)
    assert stored["format"] == "distill-nas-structure/1" and stored["seed"] == 2
    assert stored["measures"]["macs"] <= 300_000_000 and stored["candidates"] == 40
    structure = load_structure(path)
    backbone = NasBackbone(structure, num_extra=0).eval()
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [8, 4, 2]  # strides 8, 16, 32
    assert [f.shape[1] for f in features] == backbone.channels


def test_cli_profile_saves_a_table_the_latency_budget_then_uses(tmp_path, capsys, monkeypatch):
    import distill.search.latency as latency

    real = latency.profile_latency_table

    def small(space, image_size, **kwargs):  # a 2 x 2 channel grid: seconds, not minutes
        return real(space, image_size, **{**kwargs, "channels": (8, 32), "runs": 1})

    monkeypatch.setattr(latency, "profile_latency_table", small)
    recipe = tmp_path / "search.yaml"
    recipe.write_text(f"name: nas\noutput_dir: {tmp_path}\nsearch:\n  image_size: 64\n"
                      "  score: closed_form\n  population: 8\n  candidates: 30\n"
                      "  budget: {latency_ms: 1000.0}\n")
    assert main(["search", str(recipe), "--no-progress"]) == 2
    assert "--profile" in capsys.readouterr().err
    assert main(["search", str(recipe), "--profile", "--no-progress"]) == 0
    table = tmp_path / "latency" / f"{current_device()}-64.json"
    assert str(table) in capsys.readouterr().out and table.is_file()
    assert main(["search", str(recipe), "--no-progress"]) == 0
    stored = read(tmp_path / "nas" / "search" / "structure.json")
    assert stored["latency_table"] == str(table) and 0 < stored["measures"]["latency_ms"] <= 1000
