"""The preview backend: the persona as an animated 2D character, on the CPU, no weights.

See `renderer.PreviewRenderer` for behaviour and `draw` for why Skia.
"""

from .ensemble import ScenePreviewRenderer
from .renderer import LIMITS, PreviewRenderer

__all__ = ["LIMITS", "PreviewRenderer", "ScenePreviewRenderer"]
