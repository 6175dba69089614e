"""What ran a measurement, in words, for benchmark records and reports."""

from __future__ import annotations

import os
import platform

import torch


def describe_device(device: str | torch.device) -> str:
    """``"NVIDIA H200"`` for a CUDA device, ``"CPU (x86_64, 2 cores, 2 threads)"`` otherwise."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
