"""Metrics (few-shot accuracy with confidence intervals, COCO mAP, image-level precision/recall,
operating thresholds) and reports (self-contained HTML with plots)."""
