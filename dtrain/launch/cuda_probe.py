"""How torch asks whether CUDA is there, on a machine without NVIDIA's driver.

Lightning sets `PYTORCH_NVML_BASED_CUDA_CHECK=1` when it loads, so that torch counts GPUs through
NVML, which leaves CUDA uninitialised and `fork` safe. Where NVML's library cannot load (no NVIDIA
driver: a CPU machine), torch falls back to the CUDA runtime's own count, as it would without
the variable, but only after trying to load the library again, on every call. Every optimizer
step calls it (torch's check for CUDA graph capture): 0.1 ms a step in a tight loop of steps,
0.5-0.9 ms inside a run on this 2-core machine, where the step's math leaves it cold.
"""

import ctypes
import os

VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"
NVML_LIBRARY = "libnvidia-ml.so.1"


def skip_nvml_where_absent() -> None:
    """Drop the variable where NVML's library cannot load (torch's answer stays the same); keep
    it wherever NVML loads."""
    if os.environ.get(VARIABLE) != "1":
        return
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        del os.environ[VARIABLE]
