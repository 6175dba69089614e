"""Any size, aspect, colour, bit depth and orientation: boxes land where they were drawn, from import
through the training data path to the prediction's coordinates (geometry checked directly)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from quickstudy.detect.data import DetectionSet, letterbox
from quickstudy.detect.model import TINY, DefectDetector, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.training import colour_channels
from quickstudy.labels import Store
from quickstudy.labels.formats import import_voc
from quickstudy.labels.records import LabelledBox, Sample

BOX = (60, 10, 84, 34)  # x1, y1, x2, y2 of the bright block, as displayed


def _block(width: int, height: int, dtype: type = np.uint8, high: int = 255) -> np.ndarray:
    pixels = np.zeros((height, width), dtype=dtype)
    x1, y1, x2, y2 = BOX
    pixels[y1:y2, x1:x2] = high
    return pixels


def _bright_extent(image: torch.Tensor) -> tuple[int, int, int, int]:
    """xyxy (pixel edges) of the pixels above half brightness, over all channels."""
    ys, xs = torch.nonzero(image.float().amax(0) > 127, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _assert_near(found: tuple[float, ...], expected: tuple[float, ...], tolerance: float) -> None:
    assert all(abs(a - b) <= tolerance for a, b in zip(found, expected, strict=True)), (found, expected)


def test_letterbox_keeps_the_aspect_and_pads_without_moving_boxes() -> None:
    image, scale = letterbox(_block(120, 60), 64)
    assert image.shape == (1, 64, 64) and scale == 64 / 120
    _assert_near(_bright_extent(image), tuple(v * scale for v in BOX), 1.0)
    assert image[:, 33:, :].float().std() == 0  # the padding below the 32 image rows is flat


def test_sixteen_bit_and_exif_turned_images_go_from_import_to_training_with_their_boxes(
    tmp_path: Path,
) -> None:
    Image.fromarray(_block(120, 60, np.uint16, 60000)).save(tmp_path / "deep.png")
    stored = np.rot90(_block(120, 60), k=1)  # kept turned on disk; EXIF says: turn to display
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(
        tmp_path / "phone.jpg", exif=exif.tobytes(), quality=100
    )
    annotations = tmp_path / "Annotations"
    annotations.mkdir()
    for name in ("deep.png", "phone.jpg"):
        x1, y1, x2, y2 = BOX
        (annotations / f"{Path(name).stem}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>120</width><height>60</height></size>"
            f"<object><name>spot</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></object></annotation>"
        )
    (tmp_path / "JPEGImages").mkdir()
    for name in ("deep.png", "phone.jpg"):
        (tmp_path / name).rename(tmp_path / "JPEGImages" / name)
    with Store.open(tmp_path / "s.qs") as store:
        import_voc(store, tmp_path)  # the phone picture's displayed size (120 x 60) matches its XML
        samples = store.samples()
    data = DetectionSet.from_samples(samples, ["spot"], 96)
    for i in range(2):
        _assert_near(_bright_extent(data.images[i]), tuple(data.boxes[i, 0].tolist()), 1.5)


def test_colour_data_trains_three_channels_and_grey_in_rgb_files_stays_one(tmp_path: Path) -> None:
    red = np.zeros((60, 120, 3), dtype=np.uint8)
    red[..., 0] = _block(120, 60)
    Image.fromarray(red).save(tmp_path / "red.png")
    Image.fromarray(np.repeat(_block(120, 60)[..., None], 3, axis=2)).save(tmp_path / "grey.png")
    box = [LabelledBox(1, tuple(float(v) for v in BOX), frozenset({"spot"}))]
    colour = Sample(1, tmp_path / "red.png", 120, 60, "train", box)  # type: ignore[arg-type]
    grey = Sample(2, tmp_path / "grey.png", 120, 60, "train", box)  # type: ignore[arg-type]
    assert colour_channels([grey]) == 1 and colour_channels([grey, colour]) == 3
    data = DetectionSet.from_samples([colour], ["spot"], 64, channels=3)
    assert data.images.shape == (1, 3, 64, 64)
    assert data.images[0][0].float().max() == 255 and data.images[0][1:].float().max() == 0


def test_predictions_come_back_in_the_image_pixels_and_conversions_are_said(tmp_path: Path) -> None:
    red = np.zeros((60, 120, 3), dtype=np.uint8)
    red[..., 0] = _block(120, 60)
    Image.fromarray(red).save(tmp_path / "red.png")
    model = DefectDetector(["spot"], DetectorConfig(**TINY, image_size=64)).eval()

    def propose(features, dense, image_size):  # one proposal: the block as the network sees it
        image = letterbox(_block(120, 60), 64)[0]
        box = torch.tensor([_bright_extent(image)], dtype=torch.float32)
        return [{"boxes": box, "defect_scores": torch.ones(1), "embeddings": torch.zeros(1, 32)}]

    model.propose = propose  # type: ignore[method-assign]
    predictor = Predictor(model)
    (out,) = predictor.proposals([tmp_path / "red.png"])
    _assert_near(tuple(out["boxes"][0].tolist()), BOX, 2.0)
    assert "colour image read as grey" in predictor.notes[str(tmp_path / "red.png")]


def test_tiles_cover_a_large_frame_and_hold_each_box_where_it_was_drawn(tmp_path: Path) -> None:
    from quickstudy.data.geometry import tile_origins

    origins = tile_origins(250, 100, 96)
    xs = sorted({x for x, _ in origins})
    assert xs[0] == 0 and xs[-1] == 250 - 96 and all(b - a <= 96 * 0.75 for a, b in itertools.pairwise(xs))
    assert {y for _, y in origins} == {0, 4} or {y for _, y in origins} == {0, 100 - 96}
    Image.fromarray(_block(250, 100)).save(tmp_path / "wide.png")
    box = [LabelledBox(1, tuple(float(v) for v in BOX), frozenset({"spot"}))]
    data = DetectionSet.from_samples(
        [Sample(1, tmp_path / "wide.png", 250, 100, "train", box)],
        ["spot"],
        96,
        tiling=True,  # type: ignore[arg-type]
    )
    assert len(data) == len(origins)
    holding = [i for i in range(len(data)) if data.valid[i].any()]
    assert holding
    for i in holding:  # in tile coordinates, on the bright pixels of that tile
        _assert_near(_bright_extent(data.images[i]), tuple(data.boxes[i, 0].tolist()), 1.0)


def test_a_tiling_model_finds_the_same_boxes_as_one_pass_on_an_image_that_fits_a_tile(tmp_path: Path) -> None:
    torch.manual_seed(0)
    Image.fromarray(_block(96, 64)).save(tmp_path / "small.png")
    whole = DefectDetector(["spot"], DetectorConfig(**TINY, image_size=96)).eval()
    tiled = DefectDetector(["spot"], DetectorConfig(**TINY, image_size=96, tiling=True)).eval()
    tiled.load_state_dict(whole.state_dict())
    tiled.memory = whole.memory
    (one,) = Predictor(whole).raw([tmp_path / "small.png"])
    (tiles,) = Predictor(tiled).raw([tmp_path / "small.png"])
    assert one["boxes"].shape[0] > 0
    assert torch.equal(one["boxes"], tiles["boxes"]) and torch.equal(one["scores"], tiles["scores"])


def test_tiles_are_merged_back_into_the_frame_pixels(tmp_path: Path) -> None:
    from quickstudy.data.geometry import crop, tile_origins

    frame = _block(250, 100)
    Image.fromarray(frame).save(tmp_path / "wide.png")
    model = DefectDetector(["spot"], DetectorConfig(**TINY, image_size=96, tiling=True)).eval()

    calls = []

    def features(batch):
        calls.append(batch)
        return [torch.zeros(batch.shape[0], 1, 1, 1)]

    model.features = features  # type: ignore[method-assign]
    model.localize = torch.nn.Identity()  # type: ignore[assignment]
    tiles = [crop(frame, x0, y0, 96) for x0, y0 in tile_origins(250, 100, 96)]

    def propose_blocks(features, dense, image_size):  # per tile: the block's part in it, by each head
        batch = calls[-1]
        out = []
        for image in batch:
            found = int((image > 0.5).any())
            box = torch.tensor([_bright_extent((image * 255).to(torch.uint8))] if found else [])
            out.append(
                {
                    "boxes": box.reshape(-1, 4).float().repeat(2, 1),
                    "defect_scores": torch.ones(2 * found),
                    "embeddings": torch.zeros(2 * found, 32),
                    "head": torch.tensor([0, 1] if found else [], dtype=torch.long),
                }
            )
        return out

    model.propose = propose_blocks  # type: ignore[method-assign]
    (out,) = Predictor(model).proposals([tmp_path / "wide.png"])
    assert sum(int((t > 0).any()) for t in tiles) >= 2  # the block lies in two overlapping tiles
    # the block seen by two overlapping tiles is one proposal of each localization head
    assert sorted(out["head"].tolist()) == [0, 1]
    for box in out["boxes"]:
        _assert_near(tuple(box.tolist()), BOX, 0.5)


def test_notes_hold_the_last_predict_s_conversions_only(tmp_path: Path) -> None:
    red = np.zeros((40, 40, 3), dtype=np.uint8)
    red[..., 0] = 200
    Image.fromarray(red).save(tmp_path / "red.png")
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(tmp_path / "grey.png")
    predictor = Predictor(DefectDetector(["spot"], DetectorConfig(**TINY, image_size=64)).eval())
    predictor.predict([tmp_path / "red.png"])
    assert list(predictor.notes) == [str(tmp_path / "red.png")]
    predictor.predict([tmp_path / "grey.png"])
    assert predictor.notes == {}  # a server predicting all day does not pile them up


def test_one_decode_serves_every_tile_of_a_frame_and_a_small_cache_stays_right(tmp_path: Path) -> None:
    Image.fromarray(_block(250, 100)).save(tmp_path / "wide.png")
    sample = Sample(1, tmp_path / "wide.png", 250, 100, "train", [])  # type: ignore[arg-type]
    roomy = DetectionSet.from_samples([sample], [], 96, tiling=True)
    tight = DetectionSet.from_samples([sample], [], 96, tiling=True, cache_bytes=96 * 96)  # one tile
    assert len(roomy) == 8  # 4 across, 2 down
    assert torch.equal(roomy.images[:], tight.images[:])
    assert roomy.images.decodes == 1 and tight.images.decodes == 8
