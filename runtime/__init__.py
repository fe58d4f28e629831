"""d2ft.runtime: executes plans on real timm ViTs with torch.distributed, and measures them.

The only package of the project that imports torch and timm. It imports ``d2ft`` and
never ``simulator``.
"""

from .spec import model_spec_from_timm

__all__ = ["model_spec_from_timm"]
