"""The detector's command line on a slice of NEU-DET: train, predict, eval, and taxonomy refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quickstudy.cli import main
from quickstudy.detect.training import select_samples, split_validation
from quickstudy.detect.versions import ModelFolder
from quickstudy.labels.known import NEU_BASE, import_neu_det
from quickstudy.labels.store import Store


@pytest.fixture(scope="module")
def neu_store(neu_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("neu") / "labels.db"
    with Store.open(path) as store:
        import_neu_det(store, neu_root)
    return path


def test_base_class_selection_and_validation_hold_out(neu_store: Path):
    with Store.open(neu_store) as store:
        train = store.samples("train")
    base = select_samples(train, NEU_BASE, None)
    assert base and all(box.allowed <= set(NEU_BASE) for s in base for box in s.boxes)
    assert not any(s.path.stem.startswith(("pitted_surface", "scratches")) for s in base)
    fitted, held = split_validation(train)
    assert len(held) == 360 and all(int(s.path.stem.rsplit("_", 1)[1]) % 5 == 1 for s in held)
    assert len(fitted) == 1080


@pytest.fixture()
def neu_slice(neu_root: Path, tmp_path: Path) -> Path:
    """NEU-DET with only 2 train and 2 test images per class left in a split (the rest: no split)."""
    path = tmp_path / "slice.db"
    with Store.open(path) as store:
        import_neu_det(store, neu_root)
        splits: dict[int, str | None] = {}
        for image in store.images():
            n = int(image.path.stem.rsplit("_", 1)[1])
            splits[image.image_id] = {2: "train", 3: "train", 5: "test", 10: "test"}.get(n)
        store.set_splits(splits)
    return path


@pytest.mark.slow
def test_train_predict_eval_on_a_slice(neu_slice: Path, neu_root: Path, tmp_path: Path, capsys):
    neu_store = neu_slice
    model = tmp_path / "model"
    args = ["train", "--store", str(neu_store), "--out", str(model), "--epochs", "2"]
    assert main([*args, "--arch", "tiny", "--batch-size", "4"]) == 0
    image = neu_root / "IMAGES" / "crazing_5.jpg"
    capsys.readouterr()
    assert main(["predict", "--model", str(model), str(image), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found[0]["image"] == str(image) and isinstance(found[0]["detections"], list)
    html_report = tmp_path / "eval.html"
    command = ["eval", "--model", str(model), "--store", str(neu_store), "--split", "test", "--json"]
    assert main([*command, "--report", str(html_report)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["report"] == str(html_report)
    page = html_report.read_text()
    assert all(f'id="{section}"' in page for section in ("confusion", "taxonomy"))
    for key in ("mAP", "mAP50", "AP50", "AR100_agnostic", "image_precision", "image_recall", "ms_per_image"):
        assert key in report
    assert set(report["AP50"]) == {
        "crazing",
        "inclusion",
        "patches",
        "pitted_surface",
        "rolled-in_scale",
        "scratches",
    }
    assert report["n_images"] == 12
    command = ["eval", "--model", str(model), "--store", str(neu_store), "--target-precision", "0.9"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "precision ≥ 0.9" in printed and "defect present" in printed
    assert main([*command, "--json"]) == 0
    points = json.loads(capsys.readouterr().out)["at_target_precision"]
    assert points["target"] == 0.9 and set(points) == {"target", "defect present", *report["AP50"]}
    assert all(p["precision"] >= 0.9 for name, p in points.items() if name != "target" and p["reached"])

    support = neu_root / "IMAGES" / "scratches_2.jpg"  # a TRAIN image of the slice
    learn = ["learn", "--model", str(model), "--store", str(neu_store), "--class", "scratches"]
    assert main([*learn, "--images", str(support)]) == 0
    assert main([*learn, "--images", str(image)]) == 2  # crazing_5 holds no scratches box
    assert "holds no box labelled 'scratches'" in capsys.readouterr().err
    assert main(["models", "diff", "--model", str(model), "1", "2", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["changed"]) == {"scratches"}
    assert main(["models", "undo", "--model", str(model)]) == 0
    assert main([*learn, "--images", str(support), "--adapt-localizer"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--model", str(model), "--json"]) == 0
    newest = json.loads(capsys.readouterr().out)[-1]
    assert newest["current"] and "scratches" in newest["classes"] and "localizer adapted" in newest["note"]
    before, after = (ModelFolder(model).load(v)["model"] for v in (1, newest["version"]))
    # the new type has a localization head of its own; the base head and the backbone stay
    assert ModelFolder(model).load(newest["version"])["learned_classes"] == ["scratches"]
    assert not torch.equal(before["localize.score.weight"], after["learned_localize.score.weight"])
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("backbone.", "localize.")))
    assert main(["models", "use", "--model", str(model), "1"]) == 0

    with Store.open(neu_store) as store:
        store.taxonomy.rename("crazing", "craze")
    try:
        assert main(["eval", "--model", str(model), "--store", str(neu_store), "--json"]) == 2
        assert "'crazing'" in capsys.readouterr().err
    finally:
        with Store.open(neu_store) as store:
            store.taxonomy.rename("craze", "crazing")
    assert main(["predict", "--model", str(model), str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg" in capsys.readouterr().err
