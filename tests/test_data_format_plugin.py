"""A dataset format is one new file and one registration: a plug-in module, found through its
package's entry point, read by ``DetectionDataModule`` without a core file edited."""

from __future__ import annotations

import sys
import textwrap

import pytest
from data_fixtures import CLASSES, IMAGES, write_image

from distill.config import load_recipe
from distill.data import DATA_FORMATS, DetectionDataModule
from distill.errors import RecipeError

# a whole format: settings dataclass + registered DataFormat, as a user's package would write it
PLUGIN = '''
from dataclasses import dataclass

from distill.data.formats import DATA_FORMATS, DataFormat
from distill.data.records import RawObject, RawSample, take_first, validate_samples


@dataclass
class BoxListSettings:
    delimiter: str = ","


@DATA_FORMATS.register("boxlist")
class BoxListFormat(DataFormat):
    """One line per object: image, x0, y0, x1, y1, class name."""

    settings = BoxListSettings
    default_splits = {"train": "train.txt", "val": "val.txt"}

    def parse(self, root, split, settings, class_names, *, max_images=None, **read):
        raws = {}
        for n, line in enumerate((root / split).read_text().splitlines()):
            image, *box, name = line.split(settings.delimiter)
            raw = raws.setdefault(image, RawSample(split, root / image, image_id=len(raws)))
            raw.objects.append(RawObject(f"line {n + 1}", name, None, [float(v) for v in box]))
        names = class_names or sorted({o.category for r in raws.values() for o in r.objects})
        for raw in raws.values():
            for obj in raw.objects:
                obj.label = names.index(obj.category) if obj.category in names else None
        return validate_samples(take_first(list(raws.values()), max_images), names, **read,
                                source=f"boxlist {root / split}")
'''


@pytest.fixture
def boxlist_package(tmp_path, monkeypatch):
    """``boxlist_format.py`` plus a dist-info naming it in ``distill.data_formats``, on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "boxlist_format.py").write_text(PLUGIN)
    info = site / "boxlist_format-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: boxlist-format\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [distill.data_formats]
            boxlist = boxlist_format
        """))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "boxlist_format", raising=False)
    return site


def write_boxlist(root, delimiter: str) -> None:
    lines = []
    for stem, w, h, objects in IMAGES:
        write_image(root / f"{stem}.png", w, h)
        lines += [delimiter.join([f"{stem}.png", *map(str, box), CLASSES[label]])
                  for label, *box in objects]
    for split in ("train.txt", "val.txt"):
        (root / split).write_text("\n".join(lines) + "\n")


def test_a_plugin_format_is_read_through_the_data_module(boxlist_package, tmp_path):
    data = tmp_path / "data"
    write_boxlist(data, ";")
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(f"data:\n  format: boxlist\n  root: {data}\n"
                           "  options: {delimiter: ';'}\n  num_workers: 0\n  batch_size: 2\n")
    recipe = load_recipe(recipe_file)  # the format is found through the entry point
    assert "boxlist" in DATA_FORMATS.names()
    dm = DetectionDataModule(recipe.data, image_size=64)
    dm.setup("fit")
    assert dm.class_names == CLASSES
    summary = dm.summary()
    assert summary["format"] == "boxlist" and summary["train"]["images"] == 2
    assert summary["train"]["objects"] == 3
    sample = dm.train_index.samples[0]
    assert sample.image_path.name == "a.png" and sample.labels.tolist() == [0, 1]
    assert sample.boxes.tolist() == [[4, 6, 30, 40], [32, 10, 60, 44]]
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 64, 64) and len(targets) == 2


def test_plugin_options_are_checked_against_its_settings(boxlist_package, tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key\(s\) \['delimitor'\].*valid keys: "
                                          "delimiter"):
        load_recipe(None, ["data.format=boxlist", "data.options.delimitor=;"])
    with pytest.raises(RecipeError, match="'data.format' is 'boxlists', expected one of "
                                          "synthetic, .*boxlist"):
        load_recipe(None, ["data.format=boxlists"])
