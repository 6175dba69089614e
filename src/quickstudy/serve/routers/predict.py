"""``POST /api/predict``: an uploaded image in, the current model's detections out."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from quickstudy.serve.dependencies import Model, Upload
from quickstudy.serve.schemas import Prediction

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=Prediction)
def predict(image: Upload, model: Model) -> dict[str, Any]:
    """Boxes in the uploaded image's own pixels, each named by a class or ``unknown``, at the
    model's calibrated operating thresholds. The image is not kept."""
    version, predictor = model.get()
    with tempfile.TemporaryDirectory(prefix="quickstudy-predict-") as folder:
        # the predictor reads the file as it reads any image (orientation, colour, bit depth)
        path = Path(folder) / f"upload{image.suffix}"
        path.write_bytes(image.data)
        detections = predictor.predict([path])[0]
    return {
        "detections": [{"box": d.box, "class": d.class_name, "score": d.score} for d in detections],
        "model_version": version,
    }
