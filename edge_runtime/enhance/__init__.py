"""Image enhancements: pure functions on grayscale uint8 arrays, tested and benchmarked alone."""

from edge_runtime.enhance.ops import clahe, local_normalize, sharpen, stretch, to_gray, upscale

__all__ = ["clahe", "local_normalize", "sharpen", "stretch", "to_gray", "upscale"]
