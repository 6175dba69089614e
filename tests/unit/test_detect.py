"""The detector's losses, target assignment, augmentation, metrics, predictor and model folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import nms, roi_align

from quickstudy.detect import model as model_module
from quickstudy.detect import recognition
from quickstudy.detect.data import DetectionSet, _augment, paste_synthetic_defects, squeeze_images
from quickstudy.detect.localization import LocalizationHead
from quickstudy.detect.model import (
    TINY,
    DefectDetector,
    DetectorConfig,
    detector_from_payload,
    detector_payload,
    first_kept,
    ranked_proposals,
)
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.recognition import partial_label_loss, pyramid_roi_align
from quickstudy.detect.training import operating_thresholds, train_detector
from quickstudy.detect.versions import ModelFolder, check_taxonomy
from quickstudy.errors import QuickstudyError
from quickstudy.evaluate.detection import coco_metrics, image_level


def tiny_model(classes=("scratch", "pit"), seed: int = 0) -> DefectDetector:
    """A tiny untrained detector whose class memory lets every box through (thresholds 0, never unknown)."""
    torch.manual_seed(seed)
    model = DefectDetector(list(classes), DetectorConfig(**TINY, image_size=64)).eval()
    model.memory = model.memory.with_thresholds(dict.fromkeys(classes, 0.0), unknown=-1.0)
    return model


def targets(allowed: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two images, three boxes, with the given ``[3, 2]`` allowed mask."""
    boxes = torch.tensor([[[4.0, 4, 30, 30], [0, 0, 0, 0]], [[10.0, 10, 60, 50], [20, 20, 40, 40]]])
    valid = torch.tensor([[True, False], [True, True]])
    rois = torch.cat([torch.tensor([[0.0], [1], [1]]), boxes[valid]], 1)
    return {
        "boxes": boxes,
        "valid": valid,
        "rois": rois,
        "roi_allowed": allowed,
        "roi_support": torch.tensor([True, False, False]),
    }


def test_boxes_without_class_train_localization_only():
    model = tiny_model().train()
    model.config.pseudo_label_confidence = None  # by default a confident prediction teaches them too
    losses = model(torch.rand(2, 1, 64, 64), targets(torch.zeros(3, 2, dtype=torch.bool)))
    assert losses["loss_recognize"].item() == 0.0
    assert losses["loss_localize"].item() > 0.0
    (losses["loss_localize"] + losses["loss_recognize"]).backward()  # still one connected graph


def test_labelled_boxes_give_recognition_loss():
    model = tiny_model().train()
    allowed = torch.tensor([[True, False], [False, True], [True, False]])
    episode = {**targets(allowed), "roi_support": torch.tensor([True, True, False])}  # 2-way, 1 query
    losses = model(torch.rand(2, 1, 64, 64), episode)
    assert losses["loss_classes"].item() > 0 and losses["loss_episode"].item() > 0


def test_pseudo_labels_teach_confident_boxes_without_class_and_leave_labelled_batches_alone():
    head = DefectDetector(["a", "b"], DetectorConfig(**TINY)).recognize
    torch.manual_seed(0)
    class_vectors = torch.randn(2, 32)
    embeddings = F.normalize(
        torch.cat([class_vectors[:1] + 0.01 * torch.randn(1, 32), torch.randn(2, 32)]), dim=-1
    )
    support = torch.zeros(3, dtype=torch.bool)
    labelled = torch.tensor([[True, False], [False, True], [True, False]])
    with_labels = head.compute_loss(embeddings, labelled, class_vectors, support, 0.5)
    plain = head.compute_loss(embeddings, labelled, class_vectors, support)
    assert torch.equal(with_labels["loss_classes"], plain["loss_classes"])  # full labels: unchanged
    unlabelled = torch.zeros(3, 2, dtype=torch.bool)
    assert head.compute_loss(embeddings, unlabelled, class_vectors, support)["loss_classes"].item() == 0.0
    taught = head.compute_loss(embeddings, unlabelled, class_vectors, support, 0.9)["loss_classes"]
    # only the first box (close to class a's vector: p(a) > 0.9) learns, towards a
    logits = head.logits(embeddings, class_vectors)
    assert logits.softmax(-1)[0, 0] > 0.9 > logits.softmax(-1)[1:].max()
    assert torch.allclose(taught, F.cross_entropy(logits[:1], torch.tensor([0])))
    # an impossible confidence teaches nothing
    assert (
        head.compute_loss(embeddings, unlabelled, class_vectors, support, 1.1)["loss_classes"].item() == 0.0
    )


def test_pseudo_labelled_boxes_join_the_episode_as_queries_and_support():
    head = DefectDetector(["a", "b"], DetectorConfig(**TINY)).recognize
    torch.manual_seed(0)
    class_vectors = F.normalize(torch.randn(2, 32), dim=-1)
    near = F.normalize(class_vectors + 0.01 * torch.randn(2, 32), dim=-1)  # p(own class) > 0.9
    # boxes: a and b labelled (support), then one without class near a's vector (a query)
    embeddings = torch.cat([near, near[:1]])
    allowed = torch.tensor([[True, False], [False, True], [False, False]])
    support = torch.tensor([True, True, False])
    assert head.compute_loss(embeddings, allowed, class_vectors, support)["loss_episode"].item() == 0.0
    episode = head.compute_loss(embeddings, allowed, class_vectors, support, 0.9)["loss_episode"]
    expected = F.cross_entropy(head.logits(embeddings[2:], embeddings[:2]), torch.tensor([0]))
    assert torch.allclose(episode, expected)
    # the box without class as the support of a: the labelled a box is classified against it
    support = torch.tensor([False, True, True])
    episode = head.compute_loss(embeddings, allowed, class_vectors, support, 0.9)["loss_episode"]
    expected = F.cross_entropy(head.logits(embeddings[:1], embeddings[[2, 1]]), torch.tensor([0]))
    assert torch.allclose(episode, expected)


def test_partial_label_loss_is_cross_entropy_for_one_class_and_zero_for_all():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    one = F.one_hot(labels, 4).bool()
    assert torch.allclose(partial_label_loss(logits, one), F.cross_entropy(logits, labels))
    assert partial_label_loss(logits, torch.ones(6, 4, dtype=torch.bool)).abs().item() < 1e-6
    pair = one.clone()
    pair[:, 3] = True  # a wider allowed set can only lower the loss
    assert partial_label_loss(logits, pair) <= partial_label_loss(logits, one)
    mixed = torch.cat([one[:3], torch.zeros(3, 4, dtype=torch.bool)])  # empty sets are skipped
    assert torch.allclose(partial_label_loss(logits, mixed), F.cross_entropy(logits[:3], labels[:3]))


def test_proposals_are_dense_boxes_kept_by_score_and_nms() -> None:
    model = tiny_model()
    # its own generator: later tests' fixtures draw from the global one
    images = torch.rand(2, 1, 64, 48, generator=torch.Generator().manual_seed(0))
    features = model.features(images)
    dense = model.localize(features)
    boxes, scores = model.dense_boxes(features, dense, (64, 48))
    assert (
        boxes.shape == (*scores.shape, 4)
        and scores.shape[1] == model.localize.points([(f.shape[-2], f.shape[-1]) for f in features]).shape[0]
    )
    assert (boxes[..., 0::2] <= 48).all() and (boxes[..., 1::2] <= 64).all() and (boxes >= 0).all()
    for i, proposal in enumerate(model.propose(features, dense, (64, 48))):
        best = int(scores[i].argmax())
        assert torch.equal(proposal["boxes"][0], boxes[i, best])  # the highest-scoring box comes first
        assert proposal["defect_scores"][0] == scores[i, best]
    # with a share per level, propose keeps what ranked_proposals picks given the levels' sizes
    config = model.config
    config.proposals, config.proposals_per_level = 12, 4
    levels = model.localize.level_sizes([(f.shape[-2], f.shape[-1]) for f in features])
    for i, proposal in enumerate(model.propose(features, dense, (64, 48))):
        chosen = ranked_proposals(boxes[i], scores[i], config, 12, config.score_thresh, levels)
        by_score = ranked_proposals(boxes[i], scores[i], config, 12, config.score_thresh)
        assert torch.equal(proposal["boxes"], boxes[i, chosen]) and not torch.equal(chosen, by_score)


def test_each_level_keeps_its_best_proposals_ahead_of_a_finer_levels_many() -> None:
    """A fine level of 40 high-scored small boxes apart and a coarse level of 4 lower-scored ones: by
    score alone the 10 proposals are all fine; with 2 per level the coarse level's best 2 go ahead of
    the rest, which follow in score order, and NMS still runs across levels."""
    corners = torch.arange(40.0)[:, None].expand(40, 2) * 20
    fine = torch.cat([corners, corners + 4], 1)
    coarse = torch.tensor([[0.0, 100, 60, 160], [0, 100, 62, 162], [200, 0, 260, 60], [0, 0, 5, 5]])
    boxes = torch.cat([fine, coarse])
    scores = torch.cat([torch.linspace(0.9, 0.5, 40), torch.tensor([0.3, 0.29, 0.2, 0.4])])
    by_score = DetectorConfig(proposals_per_level=0)
    assert ranked_proposals(boxes, scores, by_score, 10, 0.01, [40, 4]).tolist() == list(range(10))
    per_level = DetectorConfig(proposals_per_level=2)
    # the coarse level's 2: box 43 and box 40 (41 lies on 40); 43 lies on fine box 0 (IoU 0.64 > 0.6)
    assert ranked_proposals(boxes, scores, per_level, 10, 0.01, [40, 4]).tolist() == [0, 1, 40, *range(2, 9)]
    assert ranked_proposals(boxes, scores, per_level, 10, 0.01).tolist() == list(range(10))  # no levels


def test_detector_config_reaches_the_localization_head() -> None:
    config = DetectorConfig(
        **{**TINY, "center_radius": 2.5, "head_convs": 3, "size_bounds": (10.0, 20.0), "level_by": "reach"}
    )
    head = DefectDetector(["a"], config).localize
    assert (head.center_radius, len(head.tower), head.level_by) == (2.5, 3, "reach")
    assert head.size_ranges == ((0.0, 10.0), (10.0, 20.0), (20.0, float("inf")))
    saved = DetectorConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert saved.size_bounds == (10.0, 20.0)


def test_older_configs_load_with_the_values_they_were_trained_with_and_a_removed_option_is_refused(
    tmp_path: Path,
) -> None:
    # a model saved before the fields existed: the plain focal loss (which adapt_localizer goes on
    # training with) and no pseudo-labels, neither key in its config; box_tower=False as it was saved
    model = tiny_model(("a", "b"))
    model.memory = model.memory.with_thresholds({"a": 0.3}, unknown=0.2)
    old = detector_payload(model, taxonomy_version=1)
    del old["config"]["score_loss"], old["config"]["pseudo_label_confidence"]
    del old["config"]["fine_recognition"]
    old["config"]["box_tower"] = False
    restored = detector_from_payload(old)
    assert restored.backbone.fine is None and len(restored.recognize.strides) == 3
    assert restored.localize.score_loss == "focal" != DetectorConfig().score_loss
    assert restored.config.pseudo_label_confidence is None
    assert DetectorConfig().pseudo_label_confidence is not None
    assert restored.memory.operating == {"a": 0.3} and restored.memory.unknown == pytest.approx(0.2)
    # a model trained with the rejected separate box tower cannot be rebuilt: one line says why
    old["config"]["box_tower"] = True
    folder = ModelFolder(tmp_path / "model")
    folder.save(old)
    with pytest.raises(QuickstudyError) as refused:
        Predictor.from_dir(folder.root)
    assert str(refused.value) == (
        f"{folder.path(1)}: was trained with the detector option box_tower=True, which was removed; "
        "train the model again"
    )


def test_the_fine_map_starts_at_zero_is_trained_and_then_shapes_the_embeddings_only() -> None:
    torch.manual_seed(0)
    config = DetectorConfig(**TINY, image_size=64, fine_recognition=True)
    fine = DefectDetector(["a", "b"], config).eval()
    plain = DefectDetector(["a", "b"], DetectorConfig(**TINY, image_size=64)).eval()
    plain.load_state_dict({k: v for k, v in fine.state_dict().items() if not k.startswith("backbone.fine")})
    images = torch.rand(2, 1, 64, 64)
    boxes = [torch.tensor([[4.0, 6.0, 20.0, 14.0]]), torch.tensor([[30.0, 30.0, 60.0, 50.0]])]
    assert [f.shape[-1] for f in fine.features(images)] == [8, 4, 2, 16]
    assert fine.recognize.strides == (8, 16, 32, 4)
    # zero at first: the pyramid's embeddings, and a gradient that reaches the lateral
    embedded = fine.embed_boxes(images, boxes)
    torch.testing.assert_close(embedded, plain.embed_boxes(images, boxes))
    embedded.sum().backward()
    assert fine.backbone.fine is not None and fine.backbone.fine.weight.grad is not None
    assert fine.backbone.fine.weight.grad.abs().sum() > 0
    torch.nn.init.normal_(fine.backbone.fine.weight)
    with torch.no_grad():
        assert not torch.allclose(fine.embed_boxes(images, boxes), plain.embed_boxes(images, boxes))
        # the localizer reads the pyramid alone, whatever the fine map holds
        ours, theirs = fine.localize(fine.features(images)), plain.localize(plain.features(images))
        torch.testing.assert_close(ours["logits"], theirs["logits"])
        proposed = fine.propose(fine.features(images), ours, (64, 64))
        torch.testing.assert_close(
            proposed[0]["boxes"], plain.propose(plain.features(images), theirs, (64, 64))[0]["boxes"]
        )


def test_the_inference_path_does_not_import_the_training_glue() -> None:
    for module in ("quickstudy.detect.predictor", "quickstudy.detect.fewshot", "quickstudy.detect"):
        code = f"import sys, {module}; print('quickstudy.detect.training' in sys.modules)"
        imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert imported.stdout.strip() == "False", module
    code = "from quickstudy.detect import train_detector; print(train_detector.__module__)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "quickstudy.detect.training"  # still there when asked for


def test_levels_by_area_keep_a_thin_box_on_the_fine_level():
    # 16 x 128: its farthest edge (64) sends it to the coarse level, its half-size sqrt(w*h)/2 = 22.6
    # to the fine one, whose grid (stride 8) has locations inside it
    boxes = torch.tensor([[[40.0, 0, 56, 128]]])
    ranges = ((0.0, 32.0), (32.0, float("inf")))
    for level_by, fine in (("reach", False), ("area", True)):
        head = LocalizationHead(8, size_ranges=ranges, strides=(8, 32), center_radius=1.0, level_by=level_by)
        positive, _, _ = head.assign([(16, 16), (4, 4)], boxes, torch.tensor([[True]]))
        on_fine = positive[0, : 16 * 16]
        assert bool(on_fine.any()) == fine and positive.any()


def test_the_quality_focal_loss_teaches_a_positive_the_iou_of_its_own_box():
    # one level, stride 8, one box of 32 x 32 centred on a grid point: the positive locations predict
    # either that box (IoU 1) or its left half (IoU 0.5); the score loss is lowest where
    # sigmoid(logit) equals that IoU, and the plain focal loss wants 1 for both
    head = LocalizationHead(8, size_ranges=((0.0, float("inf")),), strides=(8,), center_radius=1.0)
    boxes = torch.tensor([[[24.0, 24, 56, 56]]])
    valid = torch.tensor([[True]])
    positive, _, points = head.assign([(8, 8)], boxes, valid)
    edges = torch.cat([points - boxes[0, :, :2], boxes[0, :, 2:] - points], -1).clamp(min=0)
    for half, iou in ((False, 1.0), (True, 0.5)):
        distances = edges.clone()
        if half:  # the right edge moves to the box's middle: the left half of the box
            distances[:, 2] -= 16.0
        chosen = {}
        for loss in ("quality", "focal"):
            head.score_loss = loss
            grid = torch.linspace(-4, 4, 161)
            values = []
            for logit in grid:
                outputs = {
                    "logits": torch.where(positive, logit, torch.tensor(-20.0)),
                    "distances": distances[None],
                    "centerness": torch.zeros(1, points.shape[0]),
                }
                values.append(head.compute_loss(outputs, [(8, 8)], boxes, valid)["loss_score"])
            chosen[loss] = float(grid[torch.stack(values).argmin()].sigmoid())
        assert chosen["quality"] == pytest.approx(iou, abs=0.02)
        assert chosen["focal"] > 0.97
    # an image without boxes: every location is a negative under either loss, and the boxes learn nothing
    no_box = torch.tensor([[False]])
    for loss in ("quality", "focal"):
        head.score_loss = loss
        logits = torch.zeros(1, points.shape[0], requires_grad=True)
        outputs = {"logits": logits, "distances": edges[None], "centerness": torch.zeros(1, points.shape[0])}
        parts = head.compute_loss(outputs, [(8, 8)], boxes, no_box)
        parts["loss_score"].backward()
        assert parts["loss_score"] > 0 and parts["loss_box"] == 0 and parts["loss_centerness"] == 0
        assert logits.grad is not None and (logits.grad > 0).all()  # every score is pushed down


def test_a_centre_share_reaches_along_an_elongated_box_only_where_given():
    # one level, stride 8: a 16 x 128 scratch and a 48 x 48 patch in image 0, the same scratch in image 1;
    # a share of 0.5 for image 0's boxes makes the scratch's locations within 32 px of its centre
    # positive (the radius alone: 8 px), leaves the square patch and image 1 as they were
    head = LocalizationHead(8, size_ranges=((0.0, float("inf")),), strides=(8,), center_radius=1.0)
    scratch, patch = [40.0, 0, 56, 128], [100, 100, 148, 148]
    boxes = torch.tensor([[scratch, patch], [scratch, [0, 0, 0, 0]]])
    valid = torch.tensor([[True, True], [True, False]])
    share = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    plain, matched, points = head.assign([(32, 32)], boxes, valid)
    shared, _, _ = head.assign([(32, 32)], boxes, valid, share)
    on_scratch = (matched[0] == boxes[0, 0]).all(-1)
    spread = points[shared[0] & on_scratch][:, 1]
    assert points[plain[0] & on_scratch][:, 1].sub(64).abs().max() <= 8
    assert spread.sub(64).abs().max() == 28 and (shared[0] & on_scratch).sum() == 2 * 8
    assert torch.equal(shared[0] & ~on_scratch, plain[0] & ~on_scratch)
    assert torch.equal(shared[1], plain[1])


def test_fcos_assignment_marks_locations_inside_boxes_and_ignores_padding():
    head = LocalizationHead(8, size_ranges=((0.0, float("inf")),), strides=(8,))
    boxes = torch.tensor([[[8.0, 8, 40, 40], [100, 100, 120, 120]]])
    positive, matched, points = head.assign([(8, 8)], boxes, torch.tensor([[True, False]]))
    assert positive.any()
    inside = points[positive[0]]
    assert ((inside > 8) & (inside < 40)).all()
    assert (matched[positive] == boxes[0, 0]).all()
    assert not ((points > 100).all(-1) & positive[0]).any()


def test_every_box_gets_a_positive_even_between_grid_points():
    # a thin tall box (x 34..44) whose reach sends it to the stride-32 level, where the nearest grid
    # points lie at x = 16 and 48: no location qualifies, so it falls back to the nearest inside it
    head = LocalizationHead(
        8, size_ranges=((0.0, 32.0), (32.0, float("inf"))), strides=(8, 32), center_radius=1.0
    )
    boxes = torch.tensor([[[34.0, 0, 44, 128], [0, 0, 16, 16]]])
    positive, matched, points = head.assign([(16, 16), (4, 4)], boxes, torch.tensor([[True, True]]))
    thin = (matched[0] == boxes[0, 0]).all(-1) & positive[0]
    assert thin.sum() == 1
    x, y = points[thin][0].tolist()
    assert 34 < x < 44 and abs(y - 64) <= 4
    small = (matched[0] == boxes[0, 1]).all(-1) & positive[0]
    assert small.sum() >= 1


def test_augmentation_moves_boxes_with_the_pixels():
    images = torch.zeros(8, 1, 32, 32)
    images[:, :, 4:10, 20:30] = 1.0  # box x 20..30, y 4..10
    boxes = torch.tensor([[20.0, 4, 30, 10]]).expand(8, 1, 4)
    generator = torch.Generator().manual_seed(0)
    out, moved = _augment(images, boxes, generator)
    for image, (x1, y1, x2, y2) in zip(out, moved[:, 0].long(), strict=True):
        inside = image[0, y1:y2, x1:x2]
        assert inside.numel() == 60
        assert (inside > image[0].median()).all()


def test_flips_keep_the_axes_and_dihedral_transposes():
    images = torch.rand(64, 1, 32, 32)
    boxes = torch.tensor([[20.0, 4, 30, 10]]).expand(64, 1, 4)  # wider than tall
    _, flipped = _augment(images, boxes, torch.Generator().manual_seed(0), transpose=False)
    wh = flipped[:, 0, 2:] - flipped[:, 0, :2]
    assert (wh == torch.tensor([10.0, 6])).all()
    assert len({tuple(b.tolist()) for b in flipped[:, 0]}) == 4  # all four flips drawn
    _, turned = _augment(images, boxes, torch.Generator().manual_seed(0), transpose=True)
    tall = (turned[:, 0, 3] - turned[:, 0, 1]) > (turned[:, 0, 2] - turned[:, 0, 0])
    assert 0 < tall.sum() < 64
    with pytest.raises(QuickstudyError, match="augment 'rotate90'"):
        train_detector(None, "unused", augment="rotate90")


def test_photometric_changes_only_grey_levels_and_only_when_asked():
    images = torch.rand(16, 1, 32, 32)
    boxes = torch.tensor([[20.0, 4, 30, 10]]).expand(16, 1, 4)
    plain, plain_boxes = _augment(images, boxes, torch.Generator().manual_seed(0), photometric=False)
    lit, lit_boxes = _augment(images, boxes, torch.Generator().manual_seed(0), photometric=True)
    assert torch.equal(plain_boxes, lit_boxes)
    # without it every output is a flip or transpose of its input: the same multiset of pixels
    assert torch.equal(plain.flatten(1).sort(1).values, images.flatten(1).sort(1).values)
    assert not torch.allclose(lit, plain)
    assert lit.min() >= 0 and lit.max() <= 1


def test_a_squeezed_image_keeps_its_defect_inside_its_moved_box():
    images = torch.full((32, 1, 60, 60), 0.2)
    images[:, :, 10:40, 20:30] = 1.0  # a bright defect, 10 wide and 30 tall
    boxes = torch.tensor([[[20.0, 10, 30, 40], [0, 0, 0, 0]]]).repeat(32, 1, 1)  # and a padding slot
    out, moved = squeeze_images(images, boxes, 0.5, torch.Generator().manual_seed(0))
    squeezed = (moved[:, 0] != boxes[:, 0]).any(1)
    assert 6 <= int(squeezed.sum()) <= 26  # about one image in two
    assert torch.equal(out[~squeezed], images[~squeezed]) and torch.equal(moved[~squeezed], boxes[~squeezed])
    sides = moved[:, 0, 2:] - moved[:, 0, :2]
    ratios = torch.tensor([10.0, 30.0]) / sides[squeezed]
    thinner = ratios.max(1).values
    assert (ratios.min(1).values - 1).abs().max() < 1e-5  # one axis keeps its length
    assert (thinner >= 1 - 1e-5).all() and (thinner <= 3 + 1e-5).all() and (thinner > 1.05).any()
    for image, (x1, y1, x2, y2) in zip(out[squeezed], moved[squeezed, 0].tolist(), strict=True):
        bright = torch.nonzero(image[0] > 0.6)
        ys, xs = bright[:, 0].float() + 0.5, bright[:, 1].float() + 0.5  # pixel centres
        assert len(bright) and (xs >= x1 - 1).all() and (xs <= x2 + 1).all()
        assert (ys >= y1 - 1).all() and (ys <= y2 + 1).all()
        assert image.min() >= 0.2 - 1e-5 and image.max() <= 1 + 1e-5  # the freed band: the mean, no black
    unchanged, same = squeeze_images(images, boxes, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(unchanged, images) and torch.equal(same, boxes)


def test_a_synthetic_defect_changes_only_its_own_box_clear_of_the_true_ones():
    images = torch.rand(64, 1, 64, 64) * 0.2 + 0.4
    images[:, :, :, 48:] = 0.5  # letterbox padding at the right: a constant
    boxes = torch.tensor([[4.0, 4, 40, 20]]).expand(64, 1, 4)
    valid = torch.ones(64, 1, dtype=torch.bool)
    out, pasted = paste_synthetic_defects(images, boxes, valid, 0.5, torch.Generator().manual_seed(0))
    given = pasted.any(1)
    assert 16 <= int(given.sum()) <= 48  # about one image in two
    for image, before, box in zip(out[given], images[given], pasted[given].long(), strict=True):
        x1, y1, x2, y2 = box.tolist()
        assert x2 <= 48 and x2 - x1 >= 1 and y2 - y1 >= 1  # inside the picture, not the padding
        assert x2 <= 4 or x1 >= 40 or y2 <= 4 or y1 >= 20  # clear of the true box
        changed = (image != before).any(0)
        assert changed.any() and not changed[:y1].any() and not changed[y2:].any()
        assert not changed[:, :x1].any() and not changed[:, x2:].any()
        inside = image[0, y1:y2, x1:x2][changed[y1:y2, x1:x2]]
        # brighter or darker than the surface it covers by at least the smallest step, up to clipping
        assert (inside.mean() - before[0, y1:y2, x1:x2].mean()).abs() > 0.05
    assert torch.equal(out[~given], images[~given]) and not pasted[~given].any()
    none, nothing = paste_synthetic_defects(images, boxes, valid, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(none, images) and not nothing.any()


def test_a_batch_with_synthetic_defects_adds_them_as_boxes_of_no_named_type(tmp_path: Path):
    from quickstudy.labels.records import LabelledBox, Sample

    samples = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(90, 160, (64, 64), np.uint8)).save(path)
        samples.append(
            Sample(i, path, 64, 64, "train", [LabelledBox(i, (4.0, 4, 20, 20), frozenset({"pit"}))])
        )
    data = DetectionSet.from_samples(samples, ["pit"], 64)
    _, plain = data.batch(torch.arange(4), torch.Generator().manual_seed(0))
    _, targets = data.batch(torch.arange(4), torch.Generator().manual_seed(0), synthetic=1.0)
    assert plain["boxes"].shape[1] == 1 and targets["boxes"].shape[1] == 2
    added = targets["valid"][:, 1]
    assert added.any()
    exact = targets["rois"].shape[0] // 2  # jitter 1: the exact boxes, then their copies
    unnamed = targets["roi_unnamed"]
    assert int(unnamed[:exact].sum()) == int(added.sum())  # of no named type,
    assert not targets["roi_allowed"][unnamed].any() and targets["roi_allowed"][~unnamed].all()  # no class


def test_coco_metrics_known_answers():
    gt = [(np.array([[0, 0, 10, 10.0], [20, 20, 40, 40]]), np.array([0, 1]))]
    perfect = [{"boxes": gt[0][0], "scores": np.array([0.9, 0.8]), "labels": np.array([0, 1])}]
    result = coco_metrics(gt, perfect, ["a", "b"])
    assert result["mAP50"] == pytest.approx(1.0) and result["AR100_agnostic"] == pytest.approx(1.0)
    swapped = [{**perfect[0], "labels": np.array([1, 0])}]
    result = coco_metrics(gt, swapped, ["a", "b"])
    assert result["mAP50"] == 0.0 and result["AR100_agnostic"] == pytest.approx(1.0)
    assert result["AP50_agnostic"] == pytest.approx(1.0) and result["AR100_agnostic_50"] == pytest.approx(1.0)
    # one box found, shifted to IoU 0.6 with its ground truth; the other missed
    one = [{"boxes": np.array([[0, 0, 10, 6.0]]), "scores": np.array([0.9]), "labels": np.array([0])}]
    result = coco_metrics(gt, one, ["a", "b"])
    assert result["AR100_agnostic_50"] == pytest.approx(0.5)
    assert result["AP50_agnostic"] == pytest.approx(51 / 101)  # COCO: 101 recall points, 0 … 0.5 reached
    assert result["AR100_agnostic"] == pytest.approx(0.5 * 0.3)  # found at IoU .50, .55, .60 of ten
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}]
    assert coco_metrics(gt, empty, ["a", "b"])["mAP"] == 0.0


def test_image_level_precision_recall_and_operating_threshold():
    gts = [
        (np.zeros((1, 4)), np.array([0])),
        (np.zeros((1, 4)), np.array([1])),
        (np.zeros((0, 4)), np.zeros(0)),
    ]
    preds = [
        {"labels": torch.tensor([0]), "scores": torch.tensor([0.9])},
        {"labels": torch.tensor([0]), "scores": torch.tensor([0.4])},
        {"labels": torch.tensor([0]), "scores": torch.tensor([0.6])},
    ]
    result = image_level(gts, preds, ["a", "b"], {"a": 0.5, "b": 0.5})
    assert result["image_precision"]["a"] == 0.5 and result["image_recall"]["a"] == 1.0
    assert result["image_precision"]["b"] is None and result["image_recall"]["b"] == 0.0
    present = torch.tensor([[True, False], [False, True], [False, False]])
    assert operating_thresholds(preds, present, ["a", "b"])["a"] == pytest.approx(0.9)


def test_detection_set_scales_boxes_and_reads_allowed_sets_against_the_classes(tmp_path: Path):
    from quickstudy.labels.records import LabelledBox, Sample

    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((50, 100), np.uint8)).save(path)
    boxes = [
        LabelledBox(1, (10.0, 10, 50, 20), frozenset({"pit"})),
        LabelledBox(2, (0.0, 0, 100, 50), frozenset()),
        LabelledBox(3, (20.0, 5, 30, 40), frozenset({"pit", "scratch", "other"})),
    ]
    data = DetectionSet.from_samples([Sample(1, path, 100, 50, "train", boxes)], ["scratch", "pit"], 64)
    assert data.images.shape == (1, 1, 64, 64)
    # letterboxed: one scale (64 / 100) along both axes, the image in the top 32 rows
    assert torch.allclose(data.boxes[0, 0], torch.tensor([6.4, 6.4, 32.0, 12.8]))
    # a label that may also mean a type not trained ("other") names no trained class for sure
    assert data.allowed[0].tolist() == [[False, True], [False, False], [False, False]]
    assert not data.unnamed.any()


def test_predictor_handles_odd_images_and_empty_lists(tmp_path: Path):
    predictor = Predictor(tiny_model())
    rgba = np.random.default_rng(0).integers(0, 255, (40, 70, 4)).astype(np.uint8)
    deep = np.random.default_rng(1).integers(0, 65535, (300, 500)).astype(np.uint16)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(np.zeros((2000, 1500), np.uint8)).save(tmp_path / "huge.png")
    inputs = [tmp_path / "rgba.png", tmp_path / "huge.png", rgba, deep, np.zeros((5, 5), np.uint8)]
    results = predictor.predict(inputs)
    assert len(results) == 5
    for found in results[1:2]:
        assert all(0 <= d.box[0] <= d.box[2] <= 1500 and 0 <= d.box[1] <= d.box[3] <= 2000 for d in found)
    assert predictor.predict([]) == []
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(QuickstudyError, match="broken.jpg"):
        predictor.predict([broken])
    with pytest.raises(QuickstudyError, match="image 0"):
        predictor.predict([np.zeros((3, 4, 5, 6))])


def test_model_folder_round_trip_gives_identical_predictions(tmp_path: Path):
    model = tiny_model(seed=3)
    folder = ModelFolder(tmp_path / "model")
    model.memory = model.memory.add("dent", torch.randn(model.config.embedding_dim), threshold=0.25)
    assert folder.save(detector_payload(model, taxonomy_version=1, note="test")) == 1
    images = torch.rand(3, 1, 64, 64)
    before = model(images)
    restored = detector_from_payload(folder.load())
    after = restored(images)
    for a, b in zip(before, after, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert restored.classes == ["scratch", "pit", "dent"]
    assert torch.equal(restored.memory.prototypes, model.memory.prototypes)
    assert restored.memory.operating == {"scratch": 0.0, "pit": 0.0, "dent": 0.25}
    assert restored.memory.unknown == -1.0
    assert "prototypes" not in restored.state_dict()  # the memory is data beside the network
    with pytest.raises(QuickstudyError, match="no version 5"):
        folder.use(5)
    with pytest.raises(QuickstudyError, match="not a detector folder"):
        ModelFolder(tmp_path / "nothing").current()


def with_learned_head(model: DefectDetector, learned: list[str]) -> DefectDetector:
    """``model`` with a learned localization head unlike its base one, owning ``learned``."""
    head = model.add_learned_localize()
    with torch.no_grad():
        for value in head.parameters():
            value.add_(torch.randn_like(value, generator=torch.Generator().manual_seed(1)) * 0.3)
    model.set_learned_classes(learned)
    return model


def test_a_learned_head_names_only_its_classes_and_the_base_head_keeps_the_rest() -> None:
    model = tiny_model(("scratch", "pit", "dent"), seed=2)
    model.config.detections = 10_000  # every row, so the two outputs compare row for row
    images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    before = model(images)
    with_learned_head(model, ["pit", "dent"])
    assert model.learned_classes == ["pit", "dent"]  # the memory's order
    features = model.features(images)
    proposals = model.propose(features, model.localize(features), (64, 64))
    after = model.classify(proposals)
    for old, new, proposed in zip(before, after, proposals, strict=True):
        assert (proposed["head"] == 1).any() and (proposed["head"] == 0).any()
        # the base head's boxes of the class it keeps are exactly what they were
        kept_old, kept_new = old["labels"] == 0, new["labels"] == 0
        assert torch.equal(old["boxes"][kept_old], new["boxes"][kept_new])
        assert torch.equal(old["scores"][kept_old], new["scores"][kept_new])
        # the learned classes' boxes are the learned head's proposals, and never the base head's
        learned_rows = new["labels"] > 0
        assert learned_rows.any()
        from_learned = proposed["boxes"][proposed["head"] == 1]
        from_base = proposed["boxes"][proposed["head"] == 0]
        for box in new["boxes"][learned_rows]:
            assert (from_learned == box).all(1).any() and not (from_base == box).all(1).any()
    model.set_learned_classes([])
    assert model.learned_localize is None and model.learned_classes == []


def test_a_learned_head_and_its_classes_round_trip_and_bad_ones_are_named(tmp_path: Path) -> None:
    model = with_learned_head(tiny_model(seed=4), ["pit"])
    folder = ModelFolder(tmp_path / "model")
    folder.save(detector_payload(model, taxonomy_version=1, note="test"))
    images = torch.rand(2, 1, 64, 64)
    restored = detector_from_payload(folder.load())
    assert restored.learned_classes == ["pit"]
    for a, b in zip(model(images), restored(images), strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    for bad in (["crack"], [], "pit", [["pit"]]):
        with pytest.raises(QuickstudyError, match=r"^somewhere: learned_classes"):
            detector_from_payload({**folder.load(), "learned_classes": bad}, where="somewhere")
    # a head named without its weights, or weights without their head: one line naming the file
    plain = detector_payload(tiny_model())
    for broken in ({**plain, "learned_classes": ["pit"]}, {**folder.load(), "learned_classes": None}):
        with pytest.raises(QuickstudyError, match=r"^somewhere: its weights do not fit") as error:
            detector_from_payload(broken, where="somewhere")
        assert "\n" not in str(error.value)
    assert "learned_classes" not in plain and detector_from_payload(plain).learned_localize is None


class _Store:
    def __init__(self, classes, version):
        self._classes, self._version = classes, version

    def classes(self):
        return self._classes

    def taxonomy_version(self):
        return self._version


def test_a_model_refuses_a_store_whose_classes_it_knows_are_gone():
    payload = {"classes": ["scratch", "pit"], "taxonomy_version": 3}
    check_taxonomy(payload, _Store(["scratch", "pit", "dent"], 4), "m")  # a new class is fine
    with pytest.raises(QuickstudyError, match=r"'pit'.*version 5.*quickstudy learn"):
        check_taxonomy(payload, _Store(["scratch", "pit-deep", "pit-shallow"], 5), "m")


def test_trunk_pools_channels_last_with_the_same_values_and_gradients():
    from quickstudy.backbones.resnet_fpn import ResNetTrunk

    torch.manual_seed(0)
    trunk = ResNetTrunk((8, 8, 8, 8), (1, 1, 1, 1))
    image = torch.rand(2, 1, 64, 64, requires_grad=True)

    def reference(x):  # the plain NCHW pool; ReLU zeros make ties, where the gradient goes first
        x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
        return trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x))))

    ours, expected = trunk(image)[-1], reference(image)
    assert ours.is_contiguous() and torch.equal(ours, expected)
    assert torch.equal(
        torch.autograd.grad(ours.sum(), image)[0], torch.autograd.grad(expected.sum(), image)[0]
    )


def torchvision_pyramid_roi_align(features, rois, strides, output_size=7, sampling_ratio=2):
    """The reference :func:`pyramid_roi_align` must equal: torchvision's RoIAlign per level, summed."""
    return sum(
        roi_align(f.float(), rois, output_size, 1 / s, sampling_ratio, aligned=True)
        for f, s in zip(features, strides, strict=True)
    )


def test_pyramid_roi_align_equals_torchvision_roi_align_summed_over_levels():
    torch.manual_seed(0)
    features = [torch.randn(3, 8, h, w, requires_grad=True) for h, w in ((13, 9), (7, 5), (4, 3))]
    corner = torch.rand(40, 2) * 140 - 20  # some boxes start outside the 100 x 70 image
    size = torch.rand(40, 2) * 90
    size[:4] = 0.01  # degenerate boxes
    rois = torch.cat([torch.randint(0, 3, (40, 1)).float(), corner, corner + size], 1)
    rois[4, 1:] = torch.tensor([150.0, 150, 190, 190])  # wholly outside: zeros
    strides = (8, 16, 32)
    ours = pyramid_roi_align(features, rois, strides)
    expected = torchvision_pyramid_roi_align(features, rois, strides)
    assert ours.shape == expected.shape == (40, 8, 7, 7)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert ours[4].abs().max() == 0
    # it trains the detector, so its gradient must be RoIAlign's too
    weights = torch.randn_like(expected)
    ours_grad = torch.autograd.grad((ours * weights).sum(), features)
    expected_grad = torch.autograd.grad((expected * weights).sum(), features)
    for a, b in zip(ours_grad, expected_grad, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    one_image = [f[:1].detach() for f in features]  # the one-image path: no per-box copy of the grid
    torch.testing.assert_close(
        pyramid_roi_align(one_image, rois[rois[:, 0] == 0], strides),
        torchvision_pyramid_roi_align(one_image, rois[rois[:, 0] == 0], strides),
        atol=1e-5,
        rtol=1e-5,
    )
    assert pyramid_roi_align(one_image, rois[:0], strides).shape == (0, 8, 7, 7)


def test_first_kept_is_the_head_of_full_nms_even_with_tied_scores():
    torch.manual_seed(0)
    # 30 clusters of 20 near-identical boxes, a cluster's scores all above the next cluster's and
    # tied in threes: each cluster keeps one box, so the first prefixes run short and must grow
    corner = (torch.rand(30, 2) * 200).repeat_interleave(20, 0) + torch.randn(600, 2) * 0.5
    clustered = torch.cat([corner, corner + 25], 1)
    tied = 1 - torch.arange(600).div(3, rounding_mode="floor") / 600
    spread = torch.cat([torch.rand(200, 2) * 200, torch.rand(200, 2) * 200 + 30], 1)  # mostly kept
    for boxes, scores in ((clustered, tied), (spread, torch.rand(200).sort(descending=True).values)):
        for count in (1, 5, 25, 50, 1000):
            expected = nms(boxes, scores, 0.6)[:count]
            assert torch.equal(first_kept(boxes, scores, 0.6, count), expected), count


def briefly_trained_tiny_model() -> DefectDetector:
    """A tiny model after a few steps on two images, so its scores are no longer the prior's."""
    model = tiny_model(seed=1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 64, 64, generator=generator)
    allowed = torch.tensor([[True, False], [False, True], [True, False]])
    for _ in range(5):
        optimizer.zero_grad()
        losses = model(images, targets(allowed))
        (losses["loss_localize"] + losses["loss_recognize"]).backward()
        optimizer.step()
    return model.eval()


def test_fast_inference_predicts_what_roi_align_and_full_nms_predict(tmp_path, monkeypatch):
    folder = ModelFolder(tmp_path / "model")
    folder.save(detector_payload(briefly_trained_tiny_model(), taxonomy_version=1, note="t"))
    model = detector_from_payload(folder.load())
    model.config.proposals = 20  # fewer than the ~84 locations of a 64-pixel image: NMS stops early
    images = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    fast = model(images)
    monkeypatch.setattr(recognition, "pyramid_roi_align", torchvision_pyramid_roi_align)
    monkeypatch.setattr(
        model_module, "first_kept", lambda boxes, scores, iou, count: nms(boxes, scores, iou)[:count]
    )
    reference = model(images)
    for a, b in zip(fast, reference, strict=True):
        assert a["boxes"].shape[0] > 1
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
        for key in ("scores", "embeddings", "similarity", "max_similarity", "defect_scores"):
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


def test_thresholds_at_a_target_precision_cost_the_recall_they_must() -> None:
    from quickstudy.detect.evaluation import at_target_precision

    def detections(*pairs: tuple[int, float]) -> dict[str, torch.Tensor]:
        return {"labels": torch.tensor([c for c, _ in pairs]), "scores": torch.tensor([s for _, s in pairs])}

    outputs = [detections((0, 0.9)), detections((0, 0.8), (1, 0.6)), detections((0, 0.7)), detections()]
    named = [
        (None, np.array([0])),
        (None, np.array([1])),
        (None, np.array([0, 0])),
        (None, np.array([], int)),
    ]
    points = at_target_precision(outputs, named, ["a", "b"], 0.99)
    # class a: the 0.8 image holds no a, so only 0.9 is above it at full precision
    assert (points["a"]["threshold"], points["a"]["precision"], points["a"]["recall"]) == (
        pytest.approx(0.9),
        1.0,
        0.5,
    )
    assert (points["b"]["threshold"], points["b"]["recall"]) == (pytest.approx(0.6), 1.0)
    assert points["defect present"]["recall"] == 1.0 and points["defect present"]["flagged"] == 3
    assert all(p["reached"] for p in points.values())
    # no image holds the third class: nothing reaches the target, and the report stays valid JSON
    missing = at_target_precision(outputs, named, ["a", "b", "c"], 0.99)["c"]
    assert missing == {
        "threshold": None,
        "precision": None,
        "recall": 0.0,
        "reached": False,
        "positives": 0,
        "flagged": 0,
    }
    json.dumps(missing, allow_nan=False)
