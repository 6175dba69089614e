"""The onnxruntime predictor gives the torch predictor's detections: a tiny detector trained a few epochs
on a NEU-DET slice, on real TEST images and on non-square and colour ones, fresh from training and
after ``learn`` added a class (the export's class memory rewritten, the network not re-exported)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from quickstudy.deploy.export import export_onnx, refresh_exports
from quickstudy.deploy.runtime import OnnxPredictor
from quickstudy.detect.fewshot import learn_class
from quickstudy.detect.model import ARCHITECTURES, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import train_detector
from quickstudy.labels.known import import_neu_det
from quickstudy.labels.store import Store

NOVEL = "scratches"
# a detection counts from this score on; the matching tolerances are the issue's
THRESHOLD = 0.05
SCORE_TOLERANCE, BOX_TOLERANCE = 1e-3, 0.5


@pytest.fixture(scope="module")
def trained(neu_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny detector of five NEU classes (not scratches) trained 6 epochs on 32 TRAIN images a class
    (a quarter of them held out to calibrate its thresholds)."""
    work = tmp_path_factory.mktemp("deploy_parity")
    store_path = work / "labels.db"
    with Store.open(store_path) as store:
        import_neu_det(store, neu_root)
        splits: dict[int, str | None] = {}
        for image in store.images():
            n = int(image.path.stem.rsplit("_", 1)[1])
            splits[image.image_id] = "train" if n % 5 and n <= 40 else None
        store.set_splits(splits)
        classes = [c for c in store.classes() if c != NOVEL]
        train_detector(
            store,
            work / "model",
            epochs=4,
            batch_size=8,
            classes=classes,
            config=DetectorConfig(**ARCHITECTURES["tiny"]),
        )
    return {"store": store_path, "model": work / "model", "work": work}


def parity_images(neu_root: Path, work: Path) -> list[Path]:
    """NEU-DET TEST images (n % 5 == 0) of every class, and non-square and colour images made from them."""
    images = sorted(p for p in (neu_root / "IMAGES").glob("*.jpg") if int(p.stem.rsplit("_", 1)[1]) % 5 == 0)
    chosen = [p for p in images if int(p.stem.rsplit("_", 1)[1]) <= 40]
    made = []
    for k, source in enumerate(chosen[:: len(chosen) // 6]):
        grey = np.asarray(Image.open(source).convert("L"))
        wide = np.asarray(Image.fromarray(np.concatenate([grey, grey[:, :90]], 1)).resize((433, 170)))
        tint = np.stack([wide, np.roll(wide, 7, axis=1), 255 - wide], -1).astype(np.uint8)
        for name, pixels in (
            (f"wide_{k}.png", wide),
            (f"colour_{k}.png", tint),
            (f"tall_{k}.png", grey[:, :120]),
        ):
            Image.fromarray(pixels).save(work / name)
            made.append(work / name)
    return chosen + made


def matched(torch_out: list, onnx_out: list, cut: Callable[[str], float]) -> int:
    """Assert every detection above ``cut(its class)`` on either side has its one counterpart on the other (same
    class, box within 0.5 px, score within 1e-3); return how many were matched."""
    count = 0
    for ours, theirs in ((torch_out, onnx_out), (onnx_out, torch_out)):
        for image_index, (found, other) in enumerate(zip(ours, theirs, strict=True)):
            taken: set[int] = set()
            for d in found:
                if d.score <= cut(d.class_name):
                    continue
                candidates = [
                    j
                    for j, e in enumerate(other)
                    if j not in taken
                    and e.class_name == d.class_name
                    and abs(e.score - d.score) <= SCORE_TOLERANCE
                    and max(abs(a - b) for a, b in zip(e.box, d.box, strict=True)) <= BOX_TOLERANCE
                ]
                assert candidates, f"image {image_index}: {d} has no counterpart among {other}"
                taken.add(candidates[0])
                count += 1
    return count // 2


def check_parity(model_dir: Path, export_dir: Path, images: list[Path]) -> int:
    torch_predictor, onnx_predictor = Predictor.from_dir(model_dir), OnnxPredictor(export_dir)
    assert onnx_predictor.classes == torch_predictor.classes
    detections = [
        (
            torch_predictor.predict(images, score_threshold=THRESHOLD),
            onnx_predictor.predict(images, THRESHOLD),
        ),
        (torch_predictor.predict(images), onnx_predictor.predict(images)),
    ]
    assert onnx_predictor.notes == torch_predictor.notes  # the colour images were converted alike
    count = matched(*detections[0], lambda name: THRESHOLD + SCORE_TOLERANCE)
    memory = torch_predictor.model.memory
    operating = {name: memory.threshold(name) for name in memory.classes} | {"unknown": memory.unknown_score}
    # at the calibrated operating thresholds, unknown included
    matched(*detections[1], lambda name: operating[name] + SCORE_TOLERANCE)
    return count


@pytest.mark.slow
def test_onnx_runtime_matches_torch_before_and_after_learn(trained: dict[str, Any], neu_root: Path):
    images = parity_images(neu_root, trained["work"])
    export = export_onnx(trained["model"], trained["work"] / "export")
    assert check_parity(trained["model"], export, images) >= 20
    onnx_names = {d.class_name for found in OnnxPredictor(export).predict(images, THRESHOLD) for d in found}
    assert NOVEL not in onnx_names

    network = {name: (export / name).read_bytes() for name in ("dense.onnx", "embed.onnx")}
    support = [neu_root / "IMAGES" / f"{NOVEL}_{n}.jpg" for n in (1, 2, 3)]
    with Store.open(trained["store"]) as store:
        # prototype only: a learn that adapts the localizer or tunes the recognition head changes the
        # network and needs a new export (whether `auto` tunes the head depends on the trained model)
        learn_class(trained["model"], store, NOVEL, images=support, localizer=False, recognizer=False)
    assert refresh_exports(trained["model"]) == [export.resolve()]
    assert {name: (export / name).read_bytes() for name in network} == network  # not re-exported
    assert OnnxPredictor(export).classes[-1] == NOVEL
    assert check_parity(trained["model"], export, images) >= 20
    onnx_names = {d.class_name for found in OnnxPredictor(export).predict(images, THRESHOLD) for d in found}
    assert NOVEL in onnx_names
