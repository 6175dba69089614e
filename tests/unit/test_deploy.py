"""Export of every preset, the export's class memory kept in step with its model folder, the CLI, bad
export folders (one line naming the file), and a runtime that imports no torch."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from quickstudy.cli import export as export_cli
from quickstudy.cli.detect import cmd_predict
from quickstudy.deploy.export import export_onnx, merge_sibling_convs, refresh_exports
from quickstudy.deploy.runtime import OnnxPredictor, batched_nms, is_export, nms, ranked_proposals
from quickstudy.detect import model as detect_model
from quickstudy.detect.model import ARCHITECTURES, DefectDetector, DetectorConfig, detector_payload
from quickstudy.detect.normality import NormalityMemory
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.versions import ModelFolder
from quickstudy.errors import QuickstudyError

SIZE = 64


def make_model(root: Path, arch: str = "tiny", seed: int = 0, **config: object) -> Path:
    torch.manual_seed(seed)
    model = DefectDetector(
        ["pit", "scratch"], DetectorConfig(**ARCHITECTURES[arch], image_size=SIZE, **config)
    )
    ModelFolder(root).save(detector_payload(model.eval()))
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("deploy")
    model = make_model(root / "model")
    return model, export_onnx(model, root / "export")


def copy_export(exported: tuple[Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported[1], tmp_path / "export"))


def refused(export: Path) -> str:
    with pytest.raises(QuickstudyError) as error:
        OnnxPredictor(export)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("arch", ["tiny", "small", "resnet18"])
def test_every_preset_exports_and_predicts(arch: str, tmp_path: Path):
    model = make_model(tmp_path / "model", arch)
    export = export_onnx(model, tmp_path / "export")  # checks its proposals against torch's
    predictor = OnnxPredictor(export)
    assert is_export(export) and not is_export(model)
    dense = onnx.load(str(export / "dense.onnx"))
    ops = [node.op_type for node in dense.graph.node]
    # batch norm folded into the convs (exported in eval mode); the localizer's sibling convs merged
    assert "BatchNormalization" not in ops and ops.count("Split") == 3
    assert merge_sibling_convs(dense) == 0
    assert predictor.classes == ["pit", "scratch"]
    image = np.random.default_rng(0).integers(0, 256, (50, 90), dtype=np.uint8)
    assert len(predictor.raw([image])[0]["boxes"]) == len(Predictor.from_dir(model).raw([image])[0]["boxes"])


def test_a_model_whose_recognition_reads_the_fine_map_exports_it(tmp_path: Path):
    torch.manual_seed(1)
    model = DefectDetector(
        ["pit"], DetectorConfig(**ARCHITECTURES["tiny"], image_size=SIZE, fine_recognition=True)
    )
    assert model.backbone.fine is not None
    torch.nn.init.normal_(model.backbone.fine.weight)  # as if trained: the embeddings depend on it
    ModelFolder(tmp_path / "model").save(detector_payload(model.eval()))
    export = export_onnx(tmp_path / "model", tmp_path / "export")  # checks embeddings against torch
    embed = onnx.load(str(export / "embed.onnx"))
    assert [i.name for i in embed.graph.input] == [*(f"features{i}" for i in range(4)), "boxes", "prototypes"]


def test_a_tiling_model_with_a_normality_memory_gives_the_torch_proposals(tmp_path: Path):
    torch.manual_seed(3)
    model = DefectDetector(
        ["pit"], DetectorConfig(**ARCHITECTURES["tiny"], image_size=SIZE, tiling=True)
    ).eval()
    model.normality = NormalityMemory(torch.randn(16, model.config.fpn_channels), threshold=0.9)
    ModelFolder(tmp_path / "model").save(detector_payload(model))
    export = export_onnx(tmp_path / "model", tmp_path / "export")
    frame = np.random.default_rng(1).integers(0, 256, (100, 170), dtype=np.uint8)  # 3 x 2 tiles
    ours = OnnxPredictor(export).proposals([frame])[0]
    theirs = Predictor.from_dir(tmp_path / "model").proposals([frame])[0]
    assert ours["abnormality"].max() >= 1  # some abnormal regions joined the proposals
    order = np.lexsort(ours["boxes"].T), np.lexsort(theirs["boxes"].numpy().T)
    np.testing.assert_allclose(ours["boxes"][order[0]], theirs["boxes"].numpy()[order[1]], atol=1e-3)
    np.testing.assert_allclose(
        ours["abnormality"][order[0]], theirs["abnormality"].numpy()[order[1]], atol=1e-4
    )


def test_a_learned_localization_head_exports_and_names_what_the_torch_detector_names(tmp_path: Path):
    torch.manual_seed(5)
    model = DefectDetector(
        ["pit", "scratch"], DetectorConfig(**ARCHITECTURES["tiny"], image_size=SIZE, tiling=True)
    ).eval()
    model.normality = NormalityMemory(torch.randn(16, model.config.fpn_channels), threshold=0.9)
    head = model.add_learned_localize()
    with torch.no_grad():
        for value in head.parameters():
            value.add_(torch.randn_like(value) * 0.3)
    model.set_learned_classes(["scratch"])
    ModelFolder(tmp_path / "model").save(detector_payload(model))
    export = export_onnx(tmp_path / "model", tmp_path / "export")  # checks proposals and heads
    dense = onnx.load(str(export / "dense.onnx"))
    assert [o.name for o in dense.graph.output][-3:] == ["learned_scores", "learned_boxes", "abnormality"]
    frame = np.random.default_rng(2).integers(0, 256, (100, 170), dtype=np.uint8)  # 3 x 2 tiles
    ours = OnnxPredictor(export).raw([frame])[0]
    theirs = Predictor.from_dir(tmp_path / "model").raw([frame])[0]
    assert set(ours["labels"].tolist()) == {0, 1}
    order = np.lexsort(ours["boxes"].T), np.lexsort(theirs["boxes"].numpy().T)
    np.testing.assert_allclose(ours["boxes"][order[0]], theirs["boxes"].numpy()[order[1]], atol=1e-3)
    np.testing.assert_array_equal(ours["labels"][order[0]], theirs["labels"].numpy()[order[1]])
    np.testing.assert_allclose(ours["scores"][order[0]], theirs["scores"].numpy()[order[1]], atol=1e-4)
    # a class memory whose learned classes do not fit the graph is refused, in one line
    memory = json.loads((export / "memory.json").read_text())
    for bad in ([], ["crack"]):
        (export / "memory.json").write_text(json.dumps({**memory, "learned_classes": bad}))
        assert "learned_classes" in refused(export)


@pytest.mark.parametrize(
    ("count", "spread", "size"),
    [(300, 80, (4, 30)), (1500, 400, (4, 30)), (600, 8, (10, 20))],
    ids=["few-kept", "many-blocks", "clustered"],
)
def test_numpy_nms_keeps_what_torchvision_keeps(count: int, spread: float, size: tuple[int, int]):
    """Random boxes; many small ones far apart (hundreds kept: many blocks of IoUs), and many in a small
    area (few kept: a count needs more than its first 4·count boxes)."""
    from torchvision.ops import batched_nms as tv_batched_nms
    from torchvision.ops import nms as tv_nms

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, spread, (count, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(*size, (count, 2)).astype(np.float32)], 1)
    scores, groups = rng.uniform(0, 1, count).astype(np.float32), rng.integers(0, 3, count)
    expected = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    assert nms(boxes, scores, 0.5).tolist() == expected.tolist()
    for kept in (7, 50):
        assert nms(boxes, scores, 0.5, count=kept).tolist() == expected[:kept].tolist()
    grouped = tv_batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), 0.4)
    assert batched_nms(boxes, scores, groups, 0.4).tolist() == grouped.tolist()


@pytest.mark.parametrize("per_level", [0, 3, 20])
def test_numpy_proposals_are_the_torch_detectors_with_and_without_a_share_per_level(per_level: int):
    """Three levels of random boxes, the finest scored highest (a coarse level's boxes would lose)."""
    rng = np.random.default_rng(per_level)
    levels = [400, 100, 25]
    sides = np.repeat([4.0, 16.0, 48.0], levels)[:, None]
    corners = rng.uniform(0, 120, (sum(levels), 2))
    boxes = np.concatenate([corners, corners + sides * rng.uniform(0.5, 2, (sum(levels), 2))], 1)
    boxes = boxes.astype(np.float32)
    scores = (rng.uniform(0, 1, sum(levels)) * np.repeat([1.0, 0.6, 0.4], levels)).astype(np.float32)
    config = DetectorConfig(proposals_per_level=per_level, candidates=300, proposals=40)
    settings = {
        key: float(getattr(config, key))
        for key in ("score_thresh", "candidates", "proposal_nms", "proposals")
    }
    settings["proposals_per_level"] = float(per_level)
    ours = ranked_proposals(boxes, scores, settings, levels)
    theirs = detect_model.ranked_proposals(
        torch.from_numpy(boxes), torch.from_numpy(scores), config, 40, config.score_thresh, levels
    )
    assert ours.tolist() == theirs.tolist()
    by_score = ranked_proposals(boxes, scores, {**settings, "proposals_per_level": 0.0}, levels)
    assert (ours.tolist() != by_score.tolist()) == bool(per_level)  # the share changed the selection


def test_an_export_keeps_proposals_per_level_and_refuses_levels_that_do_not_fit(tmp_path: Path):
    model = make_model(tmp_path / "model", proposals_per_level=3)
    export = export_onnx(model, tmp_path / "export")
    frame = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    ours = OnnxPredictor(export).proposals([frame])[0]
    theirs = Predictor.from_dir(model).proposals([frame])[0]
    np.testing.assert_allclose(ours["boxes"], theirs["boxes"].numpy(), atol=1e-3)
    record = json.loads((export / "memory.json").read_text())
    assert record["proposals"]["proposals_per_level"] == 3 and len(record["input"]["level_locations"]) == 3
    record["input"]["level_locations"] = [1, 2, 3]
    (export / "memory.json").write_text(json.dumps(record))
    assert refused(export).startswith(
        f"{export / 'memory.json'}: its level_locations [1, 2, 3] do not add up"
    )
    record["input"]["level_locations"] = "many"
    (export / "memory.json").write_text(json.dumps(record))
    assert refused(export).startswith(f"{export / 'memory.json'}: not a complete class memory")


def test_numpy_nms_keeps_zero_area_boxes_as_torchvision_does_and_says_nothing():
    """Boxes clamped to an image's edge can have no area: their IoU is 0 / 0, which must neither warn
    (the CLI prints warnings between its lines) nor suppress anything."""
    from torchvision.ops import nms as tv_nms

    boxes = np.array([[5, 5, 5, 9], [5, 5, 5, 9], [0, 0, 4, 4], [0, 0, 4, 4]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = nms(boxes, scores, 0.5)
    assert (
        kept.tolist() == tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist() == [0, 1, 2]
    )


def test_sibling_convolutions_become_one_with_the_same_outputs(tmp_path: Path):
    import onnxruntime as ort

    class Heads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.score, self.box = torch.nn.Conv2d(8, 1, 3, padding=1), torch.nn.Conv2d(8, 4, 3, padding=1)
            self.other = torch.nn.Conv2d(8, 2, 1)  # the same input, another geometry: kept apart

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.score(x).sigmoid(), self.box(x).relu(), self.other(x)

    torch.manual_seed(0)
    path = tmp_path / "heads.onnx"
    torch.onnx.export(Heads(), (torch.zeros(1, 8, 6, 6),), str(path), input_names=["x"], dynamo=False)
    x = {"x": np.random.default_rng(0).standard_normal((1, 8, 6, 6)).astype(np.float32)}
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)
    model = onnx.load(str(path))
    assert merge_sibling_convs(model) == 2
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node].count("Conv") == 2
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for ours, theirs in zip(session.run(None, x), expected, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_learn_and_use_rewrite_the_class_memory_and_a_changed_network_is_refused(tmp_path: Path):
    model = make_model(tmp_path / "model")
    export = export_onnx(model, tmp_path / "export")
    folder = ModelFolder(model)
    payload = folder.load()
    # what learn writes: one more prototype, the network untouched
    payload["classes"] = [*payload["classes"], "crack"]
    payload["model"]["prototypes"] = torch.cat([payload["model"]["prototypes"], torch.eye(1, 32)])
    folder.save(payload)
    assert refresh_exports(model) == [export.resolve()]
    assert OnnxPredictor(export).classes == ["pit", "scratch", "crack"]
    shutil.copytree(model, tmp_path / "copy")  # exports.json travels with a copy, the export stays its
    assert refresh_exports(tmp_path / "copy") == []
    # what --adapt-localizer writes: new weights
    payload["model"] = {k: v + 0.01 if k.startswith("localize") else v for k, v in payload["model"].items()}
    folder.save(payload)
    refresh_exports(model)
    message = refused(export)
    assert "version 3" in message and f"quickstudy export --model {model.resolve()}" in message
    folder.use(2)
    refresh_exports(model)
    assert OnnxPredictor(export).classes == ["pit", "scratch", "crack"]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_truncated_or_corrupt_onnx_file_is_named(exported: tuple[Path, Path], tmp_path: Path, damage: str):
    export = copy_export(exported, tmp_path)
    data = (export / "dense.onnx").read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # the same length, every byte from the middle on overwritten
        middle = len(data) // 2
        data = data[:middle] + np.random.default_rng(0).bytes(len(data) - middle)
    (export / "dense.onnx").write_bytes(data)
    assert refused(export).startswith(f"{export / 'dense.onnx'}: onnxruntime")


def test_an_onnx_file_that_is_not_ours_is_named(exported: tuple[Path, Path], tmp_path: Path):
    export = copy_export(exported, tmp_path)
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(export / "embed.onnx"), dynamo=False)
    assert refused(export).startswith(f"{export / 'embed.onnx'}: an ONNX model, but not quickstudy's")


def test_an_opset_onnxruntime_lacks_is_named(exported: tuple[Path, Path], tmp_path: Path):
    export = copy_export(exported, tmp_path)
    graph = onnx.load(str(export / "dense.onnx"))
    graph.opset_import[0].version = 99
    onnx.save(graph, str(export / "dense.onnx"))
    assert refused(export).startswith(f"{export / 'dense.onnx'}: onnxruntime")


def test_a_class_memory_of_another_model_is_refused(exported: tuple[Path, Path], tmp_path: Path):
    other = export_onnx(make_model(tmp_path / "other", seed=1), tmp_path / "other_export")
    export = copy_export(exported, tmp_path)
    shutil.copy(other / "memory.json", export / "memory.json")
    message = refused(export)
    assert message.startswith(
        f"{export / 'dense.onnx'}: is not the network the class memory {export / 'memory.json'}"
    )
    assert "export again" in message


def test_broken_class_memory_files_are_named(exported: tuple[Path, Path], tmp_path: Path):
    export = copy_export(exported, tmp_path)
    np.savez(export / "memory.npz", prototypes=np.zeros((5, 32), np.float32))
    assert refused(export).startswith(f"{export / 'memory.npz'}: prototypes of shape (5, 32) for 2 classes")
    (export / "memory.json").write_text("{not json")
    assert refused(export).startswith(f"{export / 'memory.json'}: not readable JSON")


def test_the_unknown_similarities_travel_to_the_export_and_an_old_export_keeps_its_rule(
    exported: tuple[Path, Path], tmp_path: Path
):
    export = copy_export(exported, tmp_path)
    record = json.loads((export / "memory.json").read_text())
    model = Predictor.from_dir(exported[0]).model.memory
    assert record["thresholds"]["unknown_far"] == model.unknown_far
    assert OnnxPredictor(export).unknown_far == model.unknown_far
    record["thresholds"]["unknown_operating"] = 0.75
    (export / "memory.json").write_text(json.dumps(record))
    assert OnnxPredictor(export).unknown_operating == 0.75
    del record["thresholds"]["unknown_far"]  # written before distance alone could say unknown
    del record["thresholds"]["unknown_operating"]
    (export / "memory.json").write_text(json.dumps(record))
    assert OnnxPredictor(export).unknown_far == -1.0 and OnnxPredictor(export).unknown_operating is None
    record["thresholds"]["unknown_far"] = "far"
    (export / "memory.json").write_text(json.dumps(record))
    assert refused(export).startswith(f"{export / 'memory.json'}: not a complete class memory")
    record["thresholds"]["unknown_far"] = 0.1
    record["thresholds"]["unknown_by_class"] = {"nope": 0.2}
    (export / "memory.json").write_text(json.dumps(record))
    assert refused(export) == f"{export / 'memory.json'}: unknown cuts for classes it does not have: nope"
    record["thresholds"]["unknown_by_class"] = {model.classes[0]: "low"}
    (export / "memory.json").write_text(json.dumps(record))
    assert refused(export).startswith(f"{export / 'memory.json'}: not a complete class memory")


def test_export_refuses_to_overwrite_a_folder_that_is_not_an_export(
    exported: tuple[Path, Path], tmp_path: Path
):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(QuickstudyError, match="exists and is not an export folder"):
        export_onnx(exported[0], tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    with pytest.raises(
        QuickstudyError, match=f"is an export; export from its model folder \\({exported[0].resolve()}"
    ):
        export_onnx(exported[1], tmp_path / "again")


def test_the_cli_exports_and_predict_prints_what_the_torch_model_prints(
    exported: tuple[Path, Path], tmp_path: Path, capsys
):
    parser = argparse.ArgumentParser()
    export_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        ["export", "--model", str(exported[0]), "--format", "onnx", "--out", str(tmp_path / "x")]
    )
    assert args.func(args) == 0
    assert is_export(tmp_path / "x")
    pixels = np.random.default_rng(2).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "frame.png")
    outputs = []
    for as_json in (False, True):
        for model, run in ((exported[0], cmd_predict), (tmp_path / "x", cmd_predict)):
            capsys.readouterr()
            namespace = argparse.Namespace(
                model=str(model),
                images=[str(tmp_path / "frame.png")],
                threshold=0.001,
                json=as_json,
                device="cpu",
            )
            assert run(namespace) == 0
            outputs.append(capsys.readouterr())
    table_torch, table_onnx, json_torch, json_onnx = outputs
    assert table_onnx.out == table_torch.out and table_onnx.err == table_torch.err
    assert "converted" in table_onnx.err or "colour" in table_onnx.err  # the colour image read as grey
    ours, theirs = json.loads(json_onnx.out), json.loads(json_torch.out)
    assert len(ours[0]["detections"]) == len(theirs[0]["detections"]) > 0
    for a, b in zip(ours[0]["detections"], theirs[0]["detections"], strict=True):
        assert a["class_name"] == b["class_name"] and abs(a["score"] - b["score"]) < 1e-4


def test_the_runtime_and_the_predict_cli_module_import_no_torch(exported: tuple[Path, Path]):
    script = (
        "import sys, numpy as np\n"
        "import quickstudy.cli.export, quickstudy.cli.detect\n"
        "from quickstudy.deploy.runtime import OnnxPredictor\n"
        f"found = OnnxPredictor({str(exported[1])!r}).predict([np.zeros((40, 70), np.uint8)], 0.001)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(len(found[0]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
