"""Every benchmark script explains itself, and the light ones run on a made-up NEU-DET or Omniglot in
seconds and give what the library and the CLI give (the real runs need the datasets and a GPU lease)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from .test_multitask_cli import fake_omniglot

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
ANCHORS = BENCHMARKS.parents[1] / "shared" / "anchors"
NEU_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


def fake_neu(root: Path, per_class: int = 10) -> Path:
    """``root/neu-det``: NEU-DET's layout and names, 64 px images each with one bright square whose
    size tells its class; ``<class>_<n>`` with n % 5 == 0 is TEST (P1), so 2 of every 10 images."""
    images, annotations = root / "neu-det" / "IMAGES", root / "neu-det" / "ANNOTATIONS"
    images.mkdir(parents=True)
    annotations.mkdir()
    rng = np.random.default_rng(0)
    for k, name in enumerate(NEU_CLASSES):
        for n in range(1, per_class + 1):
            pixels = rng.integers(0, 60, (64, 64)).astype(np.uint8)
            x, y, side = int(rng.integers(4, 30)), int(rng.integers(4, 30)), 12 + 4 * k
            pixels[y : y + side, x : x + side] = 200
            Image.fromarray(pixels).save(images / f"{name}_{n}.jpg")
            (annotations / f"{name}_{n}.xml").write_text(
                f"<annotation><filename>{name}_{n}.jpg</filename><size><width>64</width><height>64</height>"
                f"<depth>1</depth></size><object><name>{name}</name><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
                f"<xmax>{x + side}</xmax><ymax>{y + side}</ymax></bndbox></object></annotation>"
            )
    return root


def run(*argv: str | Path, cwd: Path | None = None, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    """A benchmark script, or `-m quickstudy` for the CLI, in a fresh process on one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QUICKSTUDY_CACHE": str(cwd or Path.cwd())}
    result = subprocess.run(
        [sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def json_file(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_help(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_error_kinds_sorts_each_false_positive_into_its_kind() -> None:
    from types import SimpleNamespace

    import torch

    sys.path.insert(0, str(BENCHMARKS))
    from p2_error_kinds import error_kinds

    truth = [[0.0, 0, 100, 100], [120, 120, 180, 180]]
    detections = [  # (box, score), best first
        ([0.0, 0, 100, 70], 0.9),  # found: IoU 0.7 with the first box
        ([0.0, 30, 100, 100], 0.8),  # IoU 0.7 with it too, 0.4 with the one above: a duplicate
        ([130.0, 130, 150, 150], 0.7),  # inside the second box
        ([0.0, 150, 20, 170], 0.6),  # on clean surface
        ([120.0, 120, 180, 180], 0.5),  # found
        ([0.0, 0, 10, 10], 0.4),  # ranked below full recall: not counted
    ]
    boxes = torch.tensor([d[0] for d in detections])
    out = {"boxes": boxes, "scores": torch.tensor([d[1] for d in detections]), "labels": torch.zeros(6)}
    predictor = SimpleNamespace(raw=lambda paths: [out])
    sample = SimpleNamespace(path="a.jpg", boxes=[SimpleNamespace(xyxy=b) for b in truth])
    result = error_kinds(predictor, [sample], recall=1.0)  # type: ignore[arg-type]
    assert result["found"] == 2 and result["recall_reached"] == 1.0
    assert result["errors"] == {
        "duplicate": 1,
        "part_of_box": 1,
        "spans_boxes": 0,
        "loose": 0,
        "other_type": 0,
        "background": 1,
    }


def test_error_kinds_of_one_class_tells_another_types_box_from_clean_surface() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    from p2_error_kinds import ranked_error_kinds

    outputs = [
        {"boxes": [[0.0, 0, 50, 50], [60.0, 60, 90, 90], [150.0, 0, 190, 40]], "scores": [0.9, 0.8, 0.7]},
        {"boxes": [[10.0, 10, 40, 40]], "scores": [0.6]},  # an image without the class
    ]
    result = ranked_error_kinds(outputs, [[[0.0, 0, 50, 50]], []], 1.0, others=[[[55.0, 55, 95, 95]], []])
    assert result["found"] == 1
    assert result["errors"]["other_type"] == 0  # ranked below full recall
    result = ranked_error_kinds(
        outputs, [[[0.0, 0, 50, 50]], [[100.0, 100, 120, 120]]], 1.0, others=[[[55.0, 55, 95, 95]], []]
    )
    assert result["recall_reached"] == 0.5
    assert {k: v for k, v in result["errors"].items() if v} == {"other_type": 1, "background": 2}


def test_p2_seeds_averages_runs_and_names_a_broken_file(tmp_path: Path) -> None:
    def run(seed: int, map50: float) -> Path:
        report = {"mAP50": map50, "mAP": 0.3, "AP50_agnostic": 0.7, "AR100_agnostic_50": 0.9}
        variant = {**report, "mAP50": map50 + 0.01, "AP50": {"crazing": 0.5}}
        payload = {"args": {"seed": seed}, "ours": {"equal": {**report, "AP50": {"crazing": 0.4}}}}
        payload["ours"]["equal"]["inference_variants"] = {"proposals=100": variant}
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps(payload))
        return path

    script = [sys.executable, str(BENCHMARKS / "p2_seeds.py")]
    runs = [str(run(0, 0.68)), str(run(1, 0.70)), str(run(2, 0.72))]
    result = subprocess.run([*script, *runs, "--json"], capture_output=True, text=True, timeout=60)
    summary = json.loads(result.stdout)["summary"]
    assert summary["mAP50"] == pytest.approx([0.70, 0.02])
    assert summary["AP50 crazing"] == pytest.approx([0.4, 0.0])
    result = subprocess.run(
        [*script, *runs, "--variant", "proposals=100", "--json"], capture_output=True, text=True, timeout=60
    )
    assert json.loads(result.stdout)["summary"]["mAP50"] == pytest.approx([0.71, 0.02])
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"ours": ')
    no_ap50 = tmp_path / "no-ap50.json"
    no_ap50.write_text(
        json.dumps({"args": {"seed": 3}, "ours": {"equal": {c: 0.5 for c in ("mAP50", "mAP")}}})
    )
    for broken in (truncated, no_ap50):
        result = subprocess.run([*script, runs[0], str(broken)], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert result.stderr.strip().count("\n") == 0 and str(broken) in result.stderr


@pytest.mark.slow
def test_p2_trains_exactly_as_quickstudy_train_does_and_fit_all_fits_every_train_image(
    tmp_path: Path,
) -> None:
    from quickstudy.detect.versions import ModelFolder

    if not (ANCHORS / "neu_metrics.py").exists():
        pytest.skip(f"P2 scores with the anchor's metrics too; not found at {ANCHORS}")
    data = fake_neu(tmp_path)
    options = ["--arch", "tiny", "--epochs", "1", "--limit", "12", "--fit-all", "--device", "cpu"]
    smoke = ["--test-limit", "6", "--no-retinanet", "--threads", "1"]
    work = tmp_path / "w"
    run(BENCHMARKS / "p2_neu_detect.py", "--data", data / "neu-det", "--work", work, *options, *smoke,
        "--json-out", tmp_path / "p2.json")  # fmt: skip
    report = json_file(tmp_path / "p2.json")["ours"]["equal"]
    assert report["n_images"] == 6 and report["train_seconds"] > 0
    assert set(report["anchor_metrics"]) == {"mAP50", "mAP50_95", "AP50"}
    run("-m", "quickstudy", "train", "--store", work / "neu.db", "--out", tmp_path / "cli", *options)
    benchmark = ModelFolder(work / "ours-equal").load()["train"]
    cli = ModelFolder(tmp_path / "cli").load()["train"]
    assert benchmark == cli  # every option, default and network setting the same
    assert (cli["n_train"], cli["n_validation"], cli["hold_out"]) == (12, 12, False)


@pytest.mark.slow
def test_p7u_scores_a_pretraining_run_as_fewshot_eval_does(tmp_path: Path) -> None:
    data = fake_neu(tmp_path)
    grid = "--backbones conv4 --width 4 --sizes 16 --methods simclr --learners nearest-mean --tta"
    smoke = "--pretrain-steps 2 --pretrain-batch 8 --threads 1"
    episodes = "--shots 1 --query 2 --episodes 6 --transductive-steps 1"
    run(BENCHMARKS / "p7u_pretrain.py", "--data-root", data, "--work", tmp_path / "w",
        *f"{grid} {smoke} {episodes}".split(), "--json-out", tmp_path / "p7u.json")  # fmt: skip
    (row,) = json_file(tmp_path / "p7u.json")["rows"]
    assert (row["protocol"], row["learner"]) == ("P7-u", "nearest-mean")
    assert set(row["results"]) == {"1-shot", "1-shot transductive"}
    fewshot_eval = [
        "-m",
        "quickstudy",
        "fewshot",
        "eval",
        "--model",
        tmp_path / "w" / "pretrain-conv4-16px-simclr",
    ]
    fewshot_eval += ["--dataset", "neu", "--data-root", data]
    fewshot_eval += [
        "--way",
        "6",
        "--shot",
        "1",
        "--query",
        "2",
        "--episodes",
        "6",
        "--tta",
        "8",
        "--device",
        "cpu",
        "--json",
    ]
    for setting, transductive in (("1-shot", "0"), ("1-shot transductive", "1")):
        printed = run(*fewshot_eval, "--transductive", transductive).stdout
        cli = json.loads(printed[printed.index("{") :])
        scored = row["results"][setting]
        assert scored["novel_accuracy"] == pytest.approx(cli["focus_accuracy"], abs=1e-9)
        assert scored["accuracy"] == pytest.approx(cli["accuracy"], abs=1e-9)


def test_labels_import_counts_what_it_imported(tmp_path: Path) -> None:
    data = fake_neu(tmp_path)
    run(
        BENCHMARKS / "labels_import.py",
        "--data-root",
        data,
        "--repeats",
        "1",
        "--json-out",
        tmp_path / "i.json",
    )
    result = json_file(tmp_path / "i.json")
    assert (result["images"], result["boxes"], result["repeats"]) == (60, 60, 1)
    assert result["import_seconds_median"] > 0


def test_meta_throughput_times_each_contender_it_is_asked_for(tmp_path: Path) -> None:
    only = "protonet_quickstudy,protonet_reference,maml_quickstudy"
    settings = ["--steps", "2", "--warmup", "1", "--maml-batch", "2", "--threads", "1"]
    run(
        BENCHMARKS / "meta_throughput.py",
        *settings,
        "--only",
        only,
        "--json-out",
        tmp_path / "t.json",
        cwd=tmp_path,
    )
    result = json_file(tmp_path / "t.json")
    assert all(result[name] > 0 for name in only.split(",")) and "maml_reference" not in result


def test_p8_measures_delta_m_against_the_single_task_row(tmp_path: Path) -> None:
    from quickstudy.multitask.metrics import delta_m

    data = fake_omniglot(tmp_path / "data")
    settings = (
        "--device cpu --tasks 2 --steps 2 --batch-size 4 --width 4 --configs shared/uncertainty,single/equal"
    )
    run(BENCHMARKS / "p8_omniglot_mtl.py", "--data-root", data, *settings.split(), "--out-dir", tmp_path / "runs",
        "--json-out", tmp_path / "p8.json", cwd=tmp_path)  # fmt: skip
    single, shared = json_file(tmp_path / "p8.json")["results"]
    assert [single["config"], shared["config"]] == [
        "single/equal",
        "shared/uncertainty",
    ]  # the baseline first
    assert single["delta_m"] == 0.0
    expected = delta_m(list(shared["accuracy"].values()), list(single["accuracy"].values()))
    assert shared["delta_m"] == pytest.approx(expected)


def test_demo_seeds_compares_settings_seed_by_seed_and_names_a_broken_summary(tmp_path: Path) -> None:
    def summary(name: str, seed: int, named: float, alarms: float) -> None:
        folder = tmp_path / f"{name}-s{seed}"
        folder.mkdir()
        values = {"known_map50": 0.5, "new_unknown_before": 0.1, "split_named_after": 0.2, "seconds": 90}
        (folder / "summary.json").write_text(
            json.dumps({**values, "new_named_after": named, "false_alarms_per_image": alarms})
        )

    for seed, (named, alarms) in enumerate([(0.1, 0.5), (0.2, 0.5)]):
        summary("default", seed, named, alarms)
        summary("other", seed, named + 0.1 * seed, alarms - 0.1)
    script = [sys.executable, str(BENCHMARKS / "demo_seeds.py"), "--out", str(tmp_path), "--seeds", "0,1"]
    settings = ["--setting", "default=", "--setting", "other=--synthetic-defects 0.2"]
    result = run(*script[1:], *settings, "--json-out", tmp_path / "report.json")
    assert "| mean | 0.500 | 0.100 | 0.150 |" in result.stdout  # the completed runs were read, not rerun
    report = json_file(tmp_path / "report.json")["other"]
    assert report["change"]["new_named_after"] == pytest.approx(0.05)
    assert report["better_on"] == {
        "known_map50": 0,
        "new_unknown_before": 0,
        "new_named_after": 1,
        "split_named_after": 0,
        "false_alarms_per_image": 2,
    }
    (tmp_path / "other-s1" / "summary.json").write_text('{"known_map50": ')
    broken = subprocess.run([*script, *settings], capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0 and broken.stderr.strip().count("\n") == 0
    assert str(tmp_path / "other-s1" / "summary.json") in broken.stderr


def test_a_store_left_empty_by_a_wrong_data_path_is_filled_on_the_next_run(tmp_path: Path) -> None:
    from quickstudy.errors import QuickstudyError

    sys.path.insert(0, str(BENCHMARKS))
    from p2_neu_detect import neu_store

    with pytest.raises(QuickstudyError):
        neu_store(tmp_path / "neu.db", tmp_path / "nowhere")
    store = neu_store(tmp_path / "neu.db", fake_neu(tmp_path, per_class=2) / "neu-det")
    assert store.stats()["images"] == 12
    assert neu_store(tmp_path / "neu.db", tmp_path / "nowhere").stats()["images"] == 12  # not read again
