"""`distill info --breakdown`: FLOPs and params per component and head level add up to the model."""

import json

import pytest

from distill.cli import main
from distill.info import format_breakdown, model_breakdown, model_info

pytestmark = pytest.mark.usefixtures("one_thread")

# (model, image size, options): every family, a light head among them
CASES = [
    ("efficientdet_dm2", 256, {}),
    ("efficientdet_d0", None, {}),
    ("maenas_dm3", None, {}),
    ("retinanet_tiny", None, {}),
    ("damo_heavy_neck_tiny", None, {}),
    ("efficientdet_dm3", None, {"light_levels": [3, 4]}),
    ("retinanet_tiny", None, {"light_levels": [3], "light_block": "separable"}),
]


@pytest.mark.parametrize("name,size,options", CASES)
def test_parts_add_up_to_the_whole(name, size, options):
    info = model_breakdown(name, num_classes=3, image_size=size, **options)
    whole = model_info(name, num_classes=3, image_size=size, **options)
    parts = info["components"]
    assert info["flops"] == 2 * whole["macs"]  # measured part by part, equal to one forward
    assert sum(p["flops"] for p in parts.values()) == info["flops"]
    assert sum(p["params"] for p in parts.values()) == whole["params"] == info["params"]
    head = parts["head"]
    assert sum(level["flops"] for level in head["levels"]) == head["flops"]
    assert sum(level["params"] for level in head["levels"]) + head["shared_params"] == head[
        "params"]
    assert [level["stride"] for level in head["levels"]] == whole["strides"]
    for level in head["levels"]:
        split = sum(level[h]["tower_flops"] + level[h]["predictor_flops"]
                    for h in ("class_head", "box_head"))
        assert split == level["flops"]


@pytest.mark.parametrize("name,size", [(n, s) for n, s, o in CASES if not o])
def test_p3_holds_the_largest_share_of_the_head(name, size):
    levels = model_breakdown(name, num_classes=3, image_size=size)["components"]["head"]["levels"]
    assert levels[0]["level"] == "P3"
    flops = [level["flops"] for level in levels]
    assert flops[0] == max(flops) and flops[0] > 0.5 * sum(flops)
    # and it is where light head blocks save the most
    light = model_breakdown(name, num_classes=3, image_size=size, light_levels=[3])
    assert light["components"]["head"]["levels"][0]["flops"] < flops[0]


def test_table_and_cli(capsys):
    info = model_breakdown("efficientdet_dm3", num_classes=3)
    table = format_breakdown(info)
    for label in ("backbone", "neck", "head (class + box)", "P3 (stride 8)", "P7 (stride 128)"):
        assert label in table
    assert main(["info", "efficientdet_dm3", "--breakdown", "--num-classes", "3", "--json",
                 "--option", "light_levels=[3]"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"] == {"light_levels": [3]}
    assert out["flops"] < info["flops"]
    assert main(["info", "efficientdet_dm3", "--breakdown", "--num-classes", "3"]) == 0
    assert capsys.readouterr().out.strip() == table
