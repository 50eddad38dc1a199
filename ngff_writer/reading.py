"""Reading any OME-Zarr image: what it holds, and whether it is valid and whole.

:func:`describe_image` reads an image's metadata and arrays (any writer's, NGFF 0.4 or
0.5) into an :class:`ImageInfo`; :func:`validate_image` checks it with ome-zarr-models,
against its arrays and, for an ngff-writer image, against its bookkeeping. They are what
``ngff-writer info`` and ``ngff-writer validate`` print.
"""

from ._ngff.describe import ChannelInfo, ImageInfo, LevelInfo, describe_image
from ._output.validate import Validation, validate_image

__all__ = ["ChannelInfo", "ImageInfo", "LevelInfo", "Validation", "describe_image", "validate_image"]
