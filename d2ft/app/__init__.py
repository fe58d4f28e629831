"""d2ft.app: the command line (``d2ft``) and the demo.

The one part of ``d2ft`` that imports the packages above the core (``simulator``,
``runtime``, ``analysis``), and only inside the commands that need them, so ``d2ft --help``
and the planning commands never import torch. Everything else in ``d2ft`` imports only the
standard library, numpy, networkx and mip (``tests/test_layering.py`` enforces it).
"""
