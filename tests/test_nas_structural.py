"""SM-NAS structural and modular search: the space, the front, budget, resume, the winner's spec."""

import json
import random
from pathlib import Path

import pytest
import torch

from distill.cli import main
from distill.config import load_recipe, recipe_to_dict
from distill.errors import RecipeError
from distill.lightning.detection import build_detector
from distill.search.blocks import StridedPointwise
from distill.search.channel_plan import apply_plan, parse_plan, plan_of
from distill.search.levels import run_level
from distill.search.modular import modular_space
from distill.search.pareto import dominates, fronts, pareto_front
from distill.search.presets import resolve_structure
from distill.search.proxy import ProxyTrainer
from distill.search.space import load_structure
from distill.search.structural import Candidate, StructuralSpace, canonical, model_spec
from distill.training import check_model
from students.nas.backbone import NasBackbone

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "quickstart.yaml"
BUDGET_MACS = 2.9e7


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    """Overrides for a search of 3 candidates, each trained 2 steps on 16 images."""
    return [
        f"output_dir={out}", f"data.root={data}", "data.num_workers=0", "data.batch_size=8",
        "data.synthetic.num_train=16", "data.synthetic.num_val=4", "search.evaluations=3",
        "search.train_steps=2", "search.val_batches=1", "search.random_initial=2",
        "search.latency_runs=2", "search.cost=macs", f"search.budget.macs={BUDGET_MACS}",
        "search.structural.backbones=[tinynet_e,maenas_dm3,mobilenetv3_small_075]",
        "search.structural.neck_widths=[8,16]", "search.structural.head_widths=[8,16]",
        "search.structural.neck_depths=[1,2]", "search.structural.head_depths=[1,2]",
        "search.structural.image_sizes=[128]", *extra,
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smnas-data")


@pytest.fixture(scope="module")
def searched(data_dir, tmp_path_factory):
    """One uninterrupted tiny structural search: (recipe, its output folder, the result)."""
    out = tmp_path_factory.mktemp("smnas-runs")
    recipe = load_recipe(RECIPE, tiny(data_dir, out))
    folder = out / "quickstart" / "search"
    return recipe, folder, run_level(recipe, "structural", folder, progress=False,
                                     recipe_path=RECIPE)


def archive(folder: Path) -> list[tuple]:
    data = json.loads((folder / "population.json").read_text())
    return [(m["candidate"], m["score"], m["measures"]["val_loss"], m["measures"]["macs"])
            for m in data["archive"]]


def test_sampled_candidates_build_and_run():
    space = StructuralSpace(image_sizes=[128])
    rng = random.Random(0)
    necks = set()
    for _ in range(6):
        candidate = space.sample(rng)
        assert space.problems(candidate) == [] and candidate == canonical(candidate)
        model = build_detector(model_spec(candidate), num_classes=3).eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 128, 128))
        anchors = model.anchors((128, 128), torch.device("cpu")).shape[0]
        assert out.cls_logits.shape == (1, anchors, 3) and out.box_deltas.shape == (1, anchors, 4)
        assert model.strides == [2**lvl for lvl in range(3, candidate.max_level + 1)]
        necks.add(candidate.neck)
    assert len(necks) > 1


def test_mutation_and_crossover_stay_in_the_space():
    space = StructuralSpace()
    rng = random.Random(1)
    a = space.sample(rng)
    for _ in range(300):
        child = space.mutate(a, rng)
        assert child != a and space.problems(child) == [] and child == canonical(child)
        cross = space.crossover(a, child, rng)
        assert space.problems(cross) == []
        assert all(getattr(cross, g) in (getattr(a, g), getattr(child, g)) or g == "head_width"
                   for g in ("backbone", "neck", "image_size", "max_level"))
        a = child
    assert space.size() > 1000


def test_modular_space_plans_build():
    base = Candidate("maenas_dm3", "fpn", 24, 1, 6, 2, 24, 128)
    cfg = load_recipe(None).search.modular
    space = modular_space(base, cfg)
    assert space.genes() == ["channel_plan", "neck_width", "head_width"]
    assert space.initial_widths == [12, 14, 16, 18]  # SM-NAS's 48..72 scaled to a 16 stage
    assert space.neck_widths == [16, 24, 48]  # 128 / 256 / 512 around 24
    rng = random.Random(0)
    child = space.sample(rng)
    for _ in range(50):
        child = space.mutate(child, rng)
        assert space.problems(child) == []
        assert space.problems(space.crossover(base, child, rng)) == []
    model = build_detector(model_spec(child), num_classes=2)
    model(torch.zeros(2, 3, 128, 128))
    plan = parse_plan(child.channel_plan)
    widths = [b.out_ch for b in model.backbone.structure[1:]]
    assert widths == plan.widths() and str(plan) == child.channel_plan


def test_channel_plan_text_and_application():
    plan = parse_plan("16 1-2-211-1-2")
    assert plan.depths == (1, 1, 3, 1, 1) and plan.widths() == [16, 32, 64, 64, 128]
    assert str(plan) == "16 1-2-211-1-2"
    structure = load_structure(resolve_structure("maenas_dm3"))
    assert str(plan_of(structure)) == "16 1-11-21111111-2-111"
    planned = apply_plan(structure, plan)
    assert [b.out_ch for b in planned] == [16, 16, 32, 64, 64, 128]
    assert all(b.in_ch == a.out_ch for a, b in zip(planned, planned[1:]))
    for bad in ("16 1-12", "x 1-2", "16"):
        with pytest.raises(ValueError, match="channel_plan"):
            parse_plan(bad)


def test_pareto_front_is_non_dominated():
    rng = random.Random(0)
    points = [(round(rng.random(), 1), round(rng.random(), 1)) for _ in range(60)]
    front = pareto_front(points, lambda p: p)
    assert front and all(not dominates(q, p) for p in front for q in points)
    assert all(any(dominates(f, p) or f == p for f in front) for p in points)
    assert [p[1] for p in front] == sorted(p[1] for p in front)
    layers = fronts(points, lambda p: p)
    assert sum(len(layer) for layer in layers) == len(points) and set(layers[0]) == set(front)


def test_search_respects_the_budget_and_writes_the_front(searched):
    _, folder, result = searched
    structural = folder / "structural"
    members = archive(structural)
    assert result["evaluations"] == len(members) == 3
    assert all(macs <= BUDGET_MACS for *_, macs in members)
    assert result["rejected"]["budget"] > 0
    front = result["front"]
    costs = [row["measures"]["macs"] for row in front]
    assert costs == sorted(costs) and all(row["measures"]["latency_ms"] > 0 for row in front)
    points = [(m[1], m[3]) for m in members]
    assert all(not dominates(q, (row["score"], row["measures"]["macs"]))
               for row in front for q in points)
    written = json.loads((structural / "front.json").read_text())
    assert written["front"] == front and written["budget"] == {"macs": BUDGET_MACS}


def test_winner_spec_builds_through_the_normal_model_path(searched, data_dir):
    recipe, folder, result = searched
    winner = load_recipe(folder / "structural" / "winner.yaml", [f"data.root={data_dir}"])
    row = result["front"][result["winner"]]
    assert winner.model.name == "smnas" and winner.model.pretrained is False
    check_model(winner.model)
    model = build_detector(recipe_to_dict(winner)["model"], num_classes=6)
    assert sum(p.numel() for p in model.parameters()) == row["measures"]["params"]


def test_killed_and_resumed_search_equals_an_uninterrupted_one(searched, data_dir, tmp_path,
                                                                monkeypatch):
    recipe, folder, _ = searched
    out = tmp_path / "search"
    again = load_recipe(RECIPE, tiny(data_dir, tmp_path))
    calls = []
    train = ProxyTrainer.__call__

    def interrupted(self, spec):
        calls.append(spec)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(self, spec)

    monkeypatch.setattr(ProxyTrainer, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_level(again, "structural", out, progress=False)
    assert len(archive(out / "structural")) == 1
    run_level(again, "structural", out, resume=True, progress=False)
    assert len(calls) == 4  # the finished candidate was not trained again
    assert archive(out / "structural") == archive(folder / "structural")
    changed = load_recipe(RECIPE, tiny(data_dir, tmp_path, "search.train_steps=3"))
    with pytest.raises(RecipeError, match="search.train_steps"):
        run_level(changed, "structural", out, resume=True, progress=False)


def test_modular_level_on_a_front_member(searched):
    recipe, folder, structural = searched
    member = structural["front"][0]
    result = run_level(recipe, "modular", folder, member=0, progress=False)
    assert result["cost"] == "flops" and result["member_key"] == member["key"]
    assert all(row["measures"]["flops"] <= member["measures"]["flops"] for row in result["front"])
    assert all(row["model"]["options"]["norm"] == "gn_ws" for row in result["front"])
    winner = load_recipe(folder / "modular-0" / "winner.yaml")
    check_model(winner.model)


@pytest.mark.parametrize("override, key", [
    ("search.structural.neks=[fpn]", "search.structural.neks"),
    ("search.structural.necks=[panet]", "'search.structural.necks'"),
    ("search.structural.max_levels=[8]", "'search.structural.max_levels'"),
    ("search.structural.image_sizes=[100]", "'search.structural.image_sizes'"),
    ("search.structural.neck_widths=[]", "'search.structural.neck_widths'"),
    ("search.metric=accuracy", "'search.metric'"),
    ("search.cost=params", "'search.cost'"),
    ("search.modular.norm=ln", "'search.modular.norm'"),
    ("search.train_steps=0", "'search.train_steps'"),
    ("search.crossover=2", "'search.crossover'"),
])
def test_bad_search_keys_name_the_key(override, key):
    with pytest.raises(RecipeError, match=key):
        load_recipe(None, [override])


def test_level_settings_errors_name_the_key(tmp_path, capsys):
    for override, key in (("search.budget.layers=10", "'search.budget.layers'"),
                          ("search.structural.backbones=[no_such_net]",
                           "'search.structural.backbones'")):
        with pytest.raises(RecipeError, match=key):
            run_level(load_recipe(None, [override]), "structural", tmp_path)
    assert main(["search", str(RECIPE), f"output_dir={tmp_path}", "--level", "modular"]) == 2
    assert "--member" in capsys.readouterr().err
    assert main(["search", str(RECIPE), f"output_dir={tmp_path}", "--level", "modular",
                 "--member", "0"]) == 2
    assert "--level structural" in capsys.readouterr().err


def test_strided_pointwise_equals_the_strided_conv_and_trains_channels_last():
    conv = torch.nn.Conv2d(8, 16, 1, 2, bias=False)
    sub = StridedPointwise(8, 16, 2)
    sub.load_state_dict(conv.state_dict())
    x = torch.randn(2, 8, 63, 63)
    assert torch.equal(sub(x), conv(x))
    backbone = NasBackbone(load_structure(resolve_structure("maenas_dm3")), num_extra=0)
    backbone = backbone.to(memory_format=torch.channels_last)
    feats = backbone(torch.randn(8, 3, 128, 128).contiguous(memory_format=torch.channels_last))
    sum(f.sum() for f in feats).backward()  # crashed the process with nn.Conv2d(stride=2)


def test_the_structural_search_recipe_loads():
    recipe = load_recipe(REPO / "recipes" / "search_structural.yaml")
    cfg = recipe.search
    assert cfg.evaluations >= 100 and cfg.budget.macs and cfg.references == ["efficientdet_dm3"]
    from distill.search.levels import check_backbones

    check_backbones(cfg.structural)
    assert StructuralSpace.from_config(cfg.structural).size() > 10_000
