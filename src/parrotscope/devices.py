"""Where torch work runs: the device and the CPU thread count, shared by every torch stage.

torch is imported lazily so that stages that do not need it (Telea inpainting) do not pay for it.
"""

from __future__ import annotations


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` (or None/empty) means CUDA when available, else CPU; anything else is used as given."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def set_torch_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads (0/None: leave torch's default).

    On a small shared machine torch's default (one thread per core, spinning while waiting) can be
    tens of times slower than one thread when other jobs hold the cores.
    """
    if threads:
        import torch

        torch.set_num_threads(int(threads))
