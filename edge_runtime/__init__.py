"""edge-runtime: read every QR code that passes a line camera and deliver each result."""

__version__ = "0.1.0"

from edge_runtime.code import Code  # noqa: E402
from edge_runtime.reader import Reader  # noqa: E402

__all__ = ["Code", "Reader", "__version__"]
