"""The multi-task defect detector: class-agnostic localization + prototype recognition.

The Python API (what ``quickstudy train | predict | eval | learn | models`` call)::

    from quickstudy.detect import Predictor, evaluate_detector, learn_class, train_detector
    version = train_detector(store, "runs/neu", epochs=24, device="cuda")   # writes runs/neu/versions/v1.pt
    found = Predictor.from_dir("runs/neu").predict(["a.jpg"])               # [[Detection(box, class_name, score, similarity, abnormality)]]
    report = evaluate_detector(Predictor.from_dir("runs/neu"), store.samples("test"))
    version = learn_class("runs/neu", store, "scratches", images=["s1.jpg"])  # new version, old kept
    ModelFolder("runs/neu").use(1)                                           # back to version 1

Modules: ``model`` (the network and its checkpoint payload), ``memory`` (the class memory: names,
prototypes, thresholds), ``localization`` and ``recognition`` (the two heads and their losses),
``data`` (store samples → in-memory batches), ``training`` (Trainer glue, calibration),
``predictor`` (user images in, named boxes out), ``evaluation``, ``fewshot`` (new classes),
``versions`` (the model folder). Inference never imports ``training``: ``train_detector`` is
loaded from it on first use.
"""

from typing import TYPE_CHECKING, Any

from quickstudy.detect.evaluation import evaluate_detector
from quickstudy.detect.fewshot import learn_class
from quickstudy.detect.memory import UNKNOWN, ClassMemory, Detection
from quickstudy.detect.model import ARCHITECTURES, DefectDetector, DetectorConfig
from quickstudy.detect.predictor import Predictor
from quickstudy.detect.versions import ModelFolder, check_taxonomy

if TYPE_CHECKING:
    from quickstudy.detect.training import train_detector


def __getattr__(name: str) -> Any:
    if name == "train_detector":
        from quickstudy.detect.training import train_detector

        return train_detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES",
    "UNKNOWN",
    "ClassMemory",
    "DefectDetector",
    "Detection",
    "DetectorConfig",
    "ModelFolder",
    "Predictor",
    "check_taxonomy",
    "evaluate_detector",
    "learn_class",
    "train_detector",
]
