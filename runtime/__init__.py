"""runtime: executes plans on real timm ViTs with torch.distributed, and measures them.

The only package of the project that imports torch and timm. It imports ``d2ft`` (never
``d2ft.app``), and never ``simulator`` or ``analysis``. Every run is described by a
``runtime.job.Job``; ``runtime.job.run(job)`` runs one on local ranks.
"""

from .spec import model_spec_from_timm

__all__ = ["model_spec_from_timm"]
