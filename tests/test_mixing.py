"""Mosaic and mixup (distill.data.mixing) on constructed items: geometry, boxes, determinism."""

from __future__ import annotations

import pytest
import torch

from distill.data.mixing import MixedDataset
from distill.errors import RecipeError

S = 32


class Constant:
    """Items ``k``: an image filled with ``k`` and one box ``[8, 8, 24, 24]`` of label ``k``."""

    class_names = [str(k) for k in range(6)]

    def __len__(self) -> int:
        return 6

    def item(self, k: int):
        target = {"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0]]),
                  "labels": torch.tensor([k]), "image_id": k, "scale": 1.0,
                  "orig_size": (S, S)}
        return torch.full((3, S, S), float(k)), target


@pytest.mark.parametrize("seed", range(8))
def test_mosaic_keeps_each_box_on_its_own_image(seed):
    image, target = MixedDataset(Constant(), mosaic=1.0)[(2, seed)]
    assert image.shape == (3, S, S)
    boxes, labels = target["boxes"], target["labels"]
    assert len(boxes) >= 1 and len(boxes) == len(labels)  # the grid's centre is in the window
    assert (boxes >= 0).all() and (boxes <= S).all()
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 1.0).all()
    for box, label in zip(boxes, labels):
        x0, y0, x1, y1 = box.tolist()
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
        if min(x1 - x0, y1 - y0) >= 4:  # inside a box of its image the pixels are its value
            assert image[0, cy, cx].item() == pytest.approx(float(label), abs=1e-4)
    assert target["image_id"] == 2  # the item's own metadata


def test_the_same_item_and_seed_give_the_same_mosaic_and_others_differ():
    data = MixedDataset(Constant(), mosaic=1.0, mixup=0.5)
    a, b = data[(1, 5)], data[(1, 5)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert any(not torch.equal(a[0], data[(1, seed)][0]) for seed in range(6, 10))


def test_mixup_averages_two_images_and_keeps_both_sets_of_boxes():
    image, target = MixedDataset(Constant(), mixup=1.0)[(4, 0)]
    other = 2 * image[0, 0, 0].item() - 4  # 0.5 * 4 + 0.5 * other
    assert torch.allclose(image, torch.full_like(image, 0.5 * 4 + 0.5 * other))
    assert target["labels"].tolist() == [4, int(round(other))]
    assert target["boxes"].shape == (2, 4)


def test_without_mixing_items_are_the_datasets():
    image, target = MixedDataset(Constant())[(3, 0)]
    assert torch.equal(image, Constant().item(3)[0]) and target["labels"].tolist() == [3]


@pytest.mark.parametrize("key,value", [("mosaic", 1.5), ("mixup", -0.1)])
def test_a_probability_outside_0_1_is_refused(key, value):
    with pytest.raises(RecipeError, match=f"data.augment.{key}: {value} is not a probability"):
        MixedDataset(Constant(), **{key: value})


def test_a_recipe_with_mosaic_trains_on_mixed_items(tmp_path):
    from distill.config import load_recipe
    from distill.training import prepare_data

    settings = [f"data.root={tmp_path / 'data'}", "data.synthetic.num_train=8",
                "data.synthetic.num_val=4", "data.num_workers=0"]
    plain = prepare_data(load_recipe(None, settings)).train_dataset
    mixed = prepare_data(load_recipe(None, [*settings, "data.augment.mosaic=1.0"])).train_dataset
    assert isinstance(mixed, MixedDataset) and not isinstance(plain, MixedDataset)
    image, target = mixed[(0, 1)]
    assert image.shape == plain[(0, 1)][0].shape and target["boxes"].shape[-1] == 4
