"""The machine types and accelerators Vertex AI online prediction accepts (its "Configure
compute resources for inference" page), and how many vCPUs each counts against the
``custom_model_serving_cpus`` quota (the number in the name, or the GPU machine's documented
size)."""

from __future__ import annotations

import re

from .errors import invalid

_SIZES = {"n1-standard": (2, 4, 8, 16, 32, 64, 96), "n1-highmem": (2, 4, 8, 16, 32, 64, 96),
          "n1-highcpu": (4, 8, 16, 32, 64, 96), "e2-standard": (2, 4, 8, 16, 32),
          "e2-highmem": (2, 4, 8, 16), "e2-highcpu": (2, 4, 8, 16, 32),
          "n2-standard": (2, 4, 8, 16, 32, 48, 64, 80), "n2-highmem": (2, 4, 8, 16, 32, 48, 64, 80),
          "c2-standard": (4, 8, 16, 30, 60), "g2-standard": (4, 8, 12, 16, 24, 32, 48, 96)}
_GPU_MACHINES = {"a2-highgpu-1g": 12, "a2-highgpu-2g": 24, "a2-highgpu-4g": 48,
                 "a2-highgpu-8g": 96, "a2-ultragpu-1g": 12, "a2-ultragpu-8g": 96,
                 "a3-highgpu-8g": 208}
#: accelerator type -> the machine families it attaches to
ACCELERATORS = {"NVIDIA_TESLA_T4": ("n1",), "NVIDIA_TESLA_V100": ("n1",),
                "NVIDIA_TESLA_P100": ("n1",), "NVIDIA_TESLA_P4": ("n1",), "NVIDIA_L4": ("g2",),
                "NVIDIA_TESLA_A100": ("a2",), "NVIDIA_A100_80GB": ("a2",),
                "NVIDIA_H100_80GB": ("a3",)}


def vcpus(machine_type: str) -> int:
    """The machine's vCPUs; INVALID_ARGUMENT naming it when Vertex does not serve on it."""
    if machine_type in _GPU_MACHINES:
        return _GPU_MACHINES[machine_type]
    found = re.fullmatch(r"([a-z0-9]+-[a-z]+)-([0-9]+)", machine_type or "")
    if not found or int(found.group(2)) not in _SIZES.get(found.group(1), ()):
        raise invalid(f'Machine type "{machine_type}" is not supported.')
    return int(found.group(2))


def check(spec: dict) -> int:
    """A ``machineSpec`` checked as Vertex does; its vCPUs."""
    machine_type = spec.get("machineType") or "n1-standard-2"
    cores = vcpus(machine_type)
    accelerator = spec.get("acceleratorType")
    if accelerator and accelerator != "ACCELERATOR_TYPE_UNSPECIFIED":
        families = ACCELERATORS.get(accelerator)
        if families is None:
            raise invalid(f'Invalid value for "accelerator_type": "{accelerator}".')
        if machine_type.split("-")[0] not in families:
            raise invalid(f'Accelerator "{accelerator}" is not supported for machine type '
                          f'"{machine_type}".')
        if int(spec.get("acceleratorCount") or 0) < 1:
            raise invalid("accelerator_count must be at least 1 when accelerator_type is set.")
    return cores
