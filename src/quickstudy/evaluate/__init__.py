"""Metrics and reports: ``detection`` (COCO mAP, class-agnostic recall, image-level precision/recall:
one evaluation behind ``quickstudy eval``), ``operating`` (thresholds for a target precision),
``matching`` (which detection found which box; confusion counts), ``figures`` (matplotlib) and
``report`` (self-contained HTML of an evaluation)."""
