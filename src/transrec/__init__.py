"""transrec: transferable, modality-based sequential recommendation.

Layers import downwards only: ``cli`` -> ``training`` / ``evaluation`` -> ``models`` -> ``data`` ->
``utils``/``registry``/``config``.
"""

__version__ = "0.1.0"
