"""The built-in defect line: deterministic, exact boxes, every type, VOC output that reads back."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from quickstudy.data.synthetic import DEFECT_TYPES, SyntheticLine, _Defect, _widened
from quickstudy.errors import QuickstudyError


def test_same_seed_and_index_give_the_same_image_in_any_order() -> None:
    first = SyntheticLine(seed=3, size=64)
    second = SyntheticLine(seed=3, size=64)
    image_a, boxes_a, classes_a = first.sample(7)
    second.sample(2)
    image_b, boxes_b, classes_b = second.sample(7)
    assert np.array_equal(image_a, image_b)
    assert np.array_equal(boxes_a, boxes_b)
    assert classes_a == classes_b


def test_seeds_and_indices_differ() -> None:
    line = SyntheticLine(seed=0, size=64)
    assert not np.array_equal(line.sample(0)[0], line.sample(6)[0])
    assert not np.array_equal(line.sample(0)[0], SyntheticLine(seed=1, size=64).sample(0)[0])


def test_every_type_appears_with_boxes_inside_the_image_that_do_not_overlap() -> None:
    line = SyntheticLine(seed=0, size=96)
    seen = set()
    for index in range(2 * len(DEFECT_TYPES)):
        image, boxes, classes = line.sample(index)
        assert image.shape == (96, 96) and image.dtype == np.uint8
        assert len(boxes) == len(classes) >= 1
        assert classes[0] == DEFECT_TYPES[index % len(DEFECT_TYPES)]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 96).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                overlap_w = min(a[2], b[2]) - max(a[0], b[0])
                overlap_h = min(a[3], b[3]) - max(a[1], b[1])
                assert overlap_w <= 0 or overlap_h <= 0
        seen.update(classes)
    assert seen == set(DEFECT_TYPES)


def test_a_chosen_subset_of_types_is_all_that_appears() -> None:
    line = SyntheticLine(seed=0, size=64, defect_types=("pit", "dent"))
    classes = {name for index in range(10) for name in line.sample(index)[2]}
    assert classes == {"pit", "dent"}


def test_min_box_side_widens_thin_boxes_about_their_centre() -> None:
    thin = SyntheticLine(seed=0, size=96, defect_types=("inclusion",), p_second_type=0)
    wide = SyntheticLine(seed=0, size=96, defect_types=("inclusion",), p_second_type=0, min_box_side=8)
    sides_thin = np.concatenate([np.diff(thin.sample(i)[1].reshape(-1, 2, 2), axis=1) for i in range(6)])
    sides_wide = np.concatenate([np.diff(wide.sample(i)[1].reshape(-1, 2, 2), axis=1) for i in range(6)])
    assert (sides_thin < 8).any()
    assert (sides_wide >= 8).all()
    assert _widened((10, 20, 13, 40), 8) == (7, 20, 15, 40)  # centre 11.5 stays 11.0..11.5


def test_box_is_the_tight_extent_of_the_visible_change() -> None:
    delta = np.zeros((10, 12), dtype=np.float32)
    delta[3:6, 4:9] = -40.0
    delta[2, 2] = -1.0  # a faint tail below the visibility fraction stays outside
    assert _Defect(delta, top=5, left=7).box() == (7 + 4, 5 + 3, 7 + 9, 5 + 6)
    assert _Defect(np.zeros((4, 4), dtype=np.float32), 0, 0).box() is None


def test_boxes_hold_the_defect_the_surface_outside_stays_calm() -> None:
    line = SyntheticLine(seed=5, size=96, defect_types=("scratch",), max_per_image=1, p_second_type=0)
    image, boxes, _ = line.sample(0)
    x1, y1, x2, y2 = boxes[0].astype(int)
    inside = image[y1:y2, x1:x2].astype(float)
    # The darkest or brightest pixel in the box stands out from the box's median by far more than noise.
    assert np.abs(inside - np.median(inside)).max() > 20


def test_brightness_alone_does_not_name_the_type() -> None:
    """Scratches and stains come both brighter and darker than the surface around them."""
    for kind in ("scratch", "stain"):
        line = SyntheticLine(seed=0, size=96, defect_types=(kind,), max_per_image=1, p_second_type=0)
        signs = set()
        for index in range(16):
            image, boxes, _ = line.sample(index)
            x1, y1, x2, y2 = boxes[0].astype(int)
            inside = image[y1:y2, x1:x2].astype(float)
            extreme = inside.max() - np.median(inside), np.median(inside) - inside.min()
            signs.add("bright" if extreme[0] > extreme[1] else "dark")
        assert signs == {"bright", "dark"}, kind


def test_write_voc_round_trips_images_and_exact_boxes(tmp_path) -> None:
    line = SyntheticLine(seed=2, size=64)
    names = line.write_voc(tmp_path, n_images=3, start=4, prefix="t")
    assert names == ["t_00004", "t_00005", "t_00006"]
    for index, name in zip(range(4, 7), names, strict=True):
        image, boxes, classes = line.sample(index)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "JPEGImages" / f"{name}.png")), image)
        root = ET.parse(tmp_path / "Annotations" / f"{name}.xml").getroot()
        assert root.findtext("filename") == f"{name}.png"
        assert root.findtext("size/width") == "64"
        objects = root.findall("object")
        assert [obj.findtext("name") for obj in objects] == classes
        for obj, box in zip(objects, boxes, strict=True):
            xml_box = [float(obj.findtext(f"bndbox/{k}") or -1) for k in ("xmin", "ymin", "xmax", "ymax")]
            assert xml_box == box.tolist()


def test_write_voc_renames_types_and_leaves_a_fraction_of_boxes_without_class(tmp_path) -> None:
    line = SyntheticLine(seed=0, size=64, defect_types=("scratch", "inclusion", "pit"))
    line.write_voc(
        tmp_path, n_images=30, names={"scratch": "line", "inclusion": "line"}, unlabelled_fraction=0.5
    )
    written = [
        obj.findtext("name") or ""
        for xml_path in sorted((tmp_path / "Annotations").glob("*.xml"))
        for obj in ET.parse(xml_path).getroot().findall("object")
    ]
    assert set(written) == {"line", "pit", ""}
    assert 0.3 < written.count("") / len(written) < 0.7
    with pytest.raises(QuickstudyError, match="unlabelled_fraction"):
        line.write_voc(tmp_path, n_images=1, unlabelled_fraction=1.5)


@pytest.mark.parametrize(
    "kwargs",
    [{"defect_types": ("scratch", "rust")}, {"defect_types": ()}, {"size": 16}, {"max_per_image": 0}],
)
def test_bad_settings_are_a_clear_error(kwargs) -> None:
    with pytest.raises(QuickstudyError, match="synthetic line"):
        SyntheticLine(**kwargs)


def test_the_line_imports_through_the_label_store_like_any_voc_dataset(tmp_path) -> None:
    from quickstudy.labels.formats.voc import import_voc
    from quickstudy.labels.store import Store

    line = SyntheticLine(seed=1, size=64, defect_types=("pit", "dent"))
    line.write_voc(tmp_path / "voc", n_images=4, unlabelled_fraction=0.5)
    with Store.open(tmp_path / "labels.qs") as store:
        report = import_voc(store, tmp_path / "voc")
        assert report.images == 4
        assert set(store.classes()) <= {"pit", "dent"}
        samples = store.samples()
    for index, sample in enumerate(samples):
        _, boxes, classes = line.sample(index)
        assert [box.xyxy for box in sample.boxes] == [tuple(b) for b in boxes.tolist()]
        for box, kind in zip(sample.boxes, classes, strict=True):
            assert box.allowed in (frozenset(), frozenset({kind}))
    assert any(not box.allowed for sample in samples for box in sample.boxes)


def test_colour_frames_hold_small_defects_inside_a_large_frame() -> None:
    from quickstudy.data.images import carries_colour

    line = SyntheticLine(seed=3, size=64, frame=(1600, 1000), colour=True)
    sides = []
    for index in range(6):
        image, boxes, classes = line.sample(index)
        assert image.shape == (1000, 1600, 3) and carries_colour(image)
        assert len(boxes) == len(classes) >= 1
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 1600).all() and (boxes[:, 3] <= 1000).all()
        sides.extend((boxes[:, 2:] - boxes[:, :2]).max(1).tolist())
    assert min(sides) >= 5 and max(sides) <= 64  # defects of tens of pixels in a 1.6-megapixel frame


def test_frames_have_the_texture_of_square_images() -> None:
    from quickstudy.data.synthetic import _frame_surface, _surface

    def stats(images: list[np.ndarray]) -> np.ndarray:
        # overall spread, and the pixel-to-pixel change along and across x (grain and streaks)
        return np.mean(
            [[im.std(), np.diff(im, axis=1).std(), np.diff(im, axis=0).std()] for im in images], axis=0
        )

    # averaged over many draws: each image's texture strengths are random
    squares = [_surface(np.random.default_rng(i), 192, 0.0) for i in range(120)]
    frames = [_frame_surface(np.random.default_rng(i), 0.0, (192, 288)) for i in range(120)]
    assert all(frame.shape == (192, 288) and frame.dtype == np.float32 for frame in frames)
    np.testing.assert_allclose(stats(frames), stats(squares), rtol=0.1)
