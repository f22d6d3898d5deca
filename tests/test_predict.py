"""`distill predict` and the Python API (`distill.load_detector`): original-pixel boxes, images
read as people see them, the same detections as validation, clear errors for bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from detector_fixtures import CLASSES, save_module, save_stage_checkpoint, tiny_module
from PIL import Image
from torchvision.transforms.v2 import functional as F

from distill.cli import main
from distill.errors import RecipeError
from distill.images import find_images, read_image


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ckpt")
    return save_module(tiny_module(tmp), tmp / "student.ckpt")


@pytest.fixture(scope="module")
def detector(ckpt):
    from distill import load_detector

    return load_detector(ckpt, device="cpu")


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random colours (blocks), so a resized copy keeps its content."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def test_load_detector_rebuilds_the_model_from_the_checkpoint_alone(detector):
    assert detector.class_names == CLASSES and detector.image_size == 128
    assert not detector.model.training
    one = detector.predict(random_image(96, 160), score_threshold=0.05)
    assert len(one) > 0 and one.boxes.shape == (len(one), 4)
    assert one.names == [CLASSES[i] for i in one.labels.tolist()]
    assert (one.scores[:-1] >= one.scores[1:]).all() and (one.scores > 0.05).all()
    assert (one.boxes[:, 0::2] <= 160).all() and (one.boxes[:, 1::2] <= 96).all()
    assert (one.boxes >= 0).all() and one.image_size == (96, 160)


def test_boxes_are_in_original_pixels(detector):
    """A 64x48 image letterboxes to the same network input as its 2x copy resized the way the
    letterbox resizes: the detections are the same, with boxes exactly 2x."""
    small = torch.from_numpy(random_image(48, 64, seed=1)).permute(2, 0, 1).contiguous()
    large = F.resize(small, [96, 128], antialias=True)
    a, b = detector.predict([small, large], score_threshold=0.05)
    assert len(a) == len(b) > 0
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(b.boxes, 2 * a.boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.scores, b.scores)


def test_every_input_kind_gives_the_same_detections(detector, tmp_path):
    array = random_image(80, 100, seed=2)
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    chw = torch.from_numpy(array).permute(2, 0, 1)
    results = [detector.predict(x) for x in (path, str(path), Image.open(path), array, chw,
                                             chw.float() / 255)]
    results.append(detector.predict(chw[None].repeat(2, 1, 1, 1))[1])  # a batch tensor
    for other in results[1:]:
        assert torch.equal(other.labels, results[0].labels)
        torch.testing.assert_close(other.boxes, results[0].boxes)
    assert isinstance(detector.predict([path]), list)


def test_exif_rotated_images_are_read_upright(detector, tmp_path):
    upright = random_image(64, 40, seed=3)  # h 64, w 40 as people see it
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 40 high, 64 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.png"
    stored.save(path, exif=exif)
    image = read_image(path)
    assert tuple(image.shape) == (3, 64, 40)
    assert torch.equal(image, torch.from_numpy(upright).permute(2, 0, 1))
    from_file, from_array = detector.predict([path, upright])
    assert from_file.image_size == (64, 40)
    torch.testing.assert_close(from_file.boxes, from_array.boxes)


def test_grayscale_rgba_and_16_bit_images_become_rgb(tmp_path):
    Image.fromarray(np.full((4, 6), 77, np.uint8), "L").save(tmp_path / "gray.png")
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:, :3] = (10, 20, 30, 255)  # left half opaque, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    deep = np.array([[0, 32768, 65535]], np.uint16).repeat(2, axis=0)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    gray, alpha, sixteen = (read_image(tmp_path / f"{n}.png") for n in ("gray", "rgba", "deep"))
    assert gray.dtype == torch.uint8 and tuple(gray.shape) == (3, 4, 6) and (gray == 77).all()
    assert alpha[:, 0, 0].tolist() == [10, 20, 30] and alpha[:, 0, 5].tolist() == [255] * 3
    assert tuple(sixteen.shape) == (3, 2, 3) and sixteen[0, 0].tolist() == [0, 128, 255]


def test_predict_matches_validation_and_the_api(ckpt, detector, tmp_path, capsys):
    """On the embedded validation images, the JSON holds the detections the validation loop
    computes (so the same mAP as `distill eval`), with the dataset's ids through --coco."""
    from test_distillation_module import tiny_recipe

    from distill.evaluation import make_map_metric, to_original_pixels
    from distill.training import prepare_data

    data = prepare_data(tiny_recipe(tmp_path))
    data.setup("validate")
    root = Path(data.cfg.root)
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(root / "images" / "val"), "--output", str(out),
                 "--device", "cpu", "--batch-size", "3", "--coco",
                 str(root / "annotations" / "val.json")]) == 0
    assert "detections in 8 images" in capsys.readouterr().out
    results = json.loads((out / "detections.json").read_text())
    meta = json.loads((out / "images.json").read_text())
    assert [c["name"] for c in meta["categories"]] == CLASSES
    drawn = sorted(p.name for p in (out / "images").iterdir())
    assert drawn == sorted(p.name for p in (root / "images" / "val").iterdir())

    from_json, from_val = make_map_metric(), make_map_metric()
    with torch.inference_mode():
        for images, targets in data.val_dataloader():
            preds, gts = to_original_pixels(detector.model.predict(detector.model(images)),
                                            targets)
            from_val.update(preds, gts)
            mine = []
            for pred, target in zip(preds, targets):
                rows = [r for r in results if r["image_id"] == target["image_id"]]
                boxes = torch.tensor([r["bbox"] for r in rows]).reshape(-1, 4)
                boxes[:, 2:] += boxes[:, :2]
                mine.append({"boxes": boxes, "scores": torch.tensor([r["score"] for r in rows]),
                             "labels": torch.tensor([r["category_id"] - 1 for r in rows])})
                assert torch.equal(mine[-1]["labels"], pred["labels"])
                torch.testing.assert_close(mine[-1]["boxes"], pred["boxes"], atol=2e-3, rtol=0)
            from_json.update(mine, gts)
    assert from_json.compute()["map"] == pytest.approx(float(from_val.compute()["map"]), abs=1e-4)

    files = sorted((root / "images" / "val").iterdir())  # the API agrees with the CLI
    by_id = {e["file_name"]: e["id"] for e in meta["images"]}
    api = detector.predict(files, score_threshold=0.05)
    for file, det in zip(files, api):
        rows = [r for r in results if r["image_id"] == by_id[file.name]]
        assert [r["bbox"] for r in rows] == [e["bbox"] for e in det.to_coco(by_id[file.name])]


def test_a_run_stage_checkpoint_predicts_like_its_student(tmp_path, capsys):
    module = tiny_module(tmp_path)
    plain = save_module(module, tmp_path / "plain.ckpt")
    stage = save_stage_checkpoint(module, tmp_path, tmp_path / "last.ckpt")
    Image.fromarray(random_image(70, 90, seed=4)).save(tmp_path / "img.jpg")
    outputs = []
    for name, ckpt in (("plain", plain), ("stage", stage)):
        assert main(["predict", str(ckpt), str(tmp_path / "*.jpg"), "--output",
                     str(tmp_path / name), "--device", "cpu", "--no-progress"]) == 0
        outputs.append(json.loads((tmp_path / name / "detections.json").read_text()))
        drawn = Image.open(tmp_path / name / "images" / "img.jpg")
        assert drawn.size == (90, 70)
    assert outputs[0] == outputs[1] and len(outputs[0]) > 0
    assert all(r["image_id"] == 1 and len(r["bbox"]) == 4 for r in outputs[0])


def test_find_images_takes_a_file_a_folder_or_a_glob(tmp_path):
    for name in ("b.jpg", "a.PNG", "notes.txt", "sub/c.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_images(tmp_path)] == ["a.PNG", "b.jpg"]
    assert [p.name for p in find_images(tmp_path / "**" / "*.jpg")] == ["b.jpg", "c.jpg"]
    assert find_images(tmp_path / "b.jpg") == [tmp_path / "b.jpg"]
    with pytest.raises(RecipeError, match="no images found"):
        find_images(tmp_path / "sub" / "*.png")
    with pytest.raises(RecipeError, match="not found"):
        find_images(tmp_path / "missing")


class Payload:
    """A pickle that would write a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def bad_checkpoints(tmp_path: Path, ckpt: Path) -> list[tuple[Path, str]]:
    """(file, expected message) pairs: each a kind of checkpoint that is not a usable one."""
    cases = [(tmp_path / "missing.ckpt", "checkpoint not found")]
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    cases.append((tmp_path / "text.ckpt", "not a loadable checkpoint"))
    (tmp_path / "cut.ckpt").write_bytes(ckpt.read_bytes()[:5000])
    cases.append((tmp_path / "cut.ckpt", "not a loadable checkpoint"))
    with open(tmp_path / "code.ckpt", "wb") as handle:
        pickle.dump({"state_dict": Payload(tmp_path / "marker.txt")}, handle)
    cases.append((tmp_path / "code.ckpt", "not a loadable checkpoint"))
    torch.save({"state_dict": {"weight": torch.zeros(1)}}, tmp_path / "weights.ckpt")
    cases.append((tmp_path / "weights.ckpt", "not a detector checkpoint"))
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["recipe"]["model"]["name"] = "efficientdet_dm2"
    torch.save(checkpoint, tmp_path / "other.ckpt")
    cases.append((tmp_path / "other.ckpt", "does not fit model 'efficientdet_dm2'"))
    return cases


def test_bad_checkpoints_are_clear_errors(ckpt, tmp_path, capsys):
    Image.fromarray(random_image(32, 32)).save(tmp_path / "img.png")
    for path, message in bad_checkpoints(tmp_path, ckpt):
        assert main(["predict", str(path), str(tmp_path / "img.png"), "--output",
                     str(tmp_path / "out"), "--no-progress"]) == 2, path
        err = capsys.readouterr().err
        assert message in err and str(path) in err, err
    assert not (tmp_path / "marker.txt").exists()  # the pickle's code never ran
    assert not (tmp_path / "out").exists()  # nothing written before the checks


def test_bad_sources_and_values_are_clear_errors(ckpt, tmp_path, capsys):
    def fails(args: list[str], message: str) -> None:
        assert main(["predict", str(ckpt), *args, "--output", str(tmp_path / "out"),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err

    (tmp_path / "empty").mkdir()
    fails([str(tmp_path / "empty")], "no images found")
    good = tmp_path / "ok.jpg"
    Image.fromarray(random_image(40, 40)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    fails([str(cut)], f"image {cut}: cannot be read")
    (tmp_path / "fake.png").write_text("hello")
    fails([str(tmp_path / "fake.png")], "cannot be read as an image")
    fails([str(good), "--device", "tpu9"], "device 'tpu9'")
    fails([str(good), "--batch-size", "0"], "--batch-size 0")
    fails([str(good), "--score-threshold", "1.5"], "--score-threshold 1.5")
    assert not (tmp_path / "out" / "detections.json").exists()
