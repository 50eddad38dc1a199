"""ngff-writer: stream model predictions into OME-Zarr, one sample or tile at a time.

Open an output with :func:`open_output`, declare images with
:meth:`Output.create_image` (segmentations with :meth:`Output.create_labels`, plates with
:meth:`Output.create_plate`), write samples as they arrive with :meth:`Image.write_sample`;
each image finalizes itself when its last block is stored. For an array in hand,
:func:`write_image` does it all in one call.
"""

from ._declare.spec import Blend, ImageSpec, Pyramid
from ._ngff.plate import Plate, PlateProgress
from ._output.handle import Image, Output, Progress, open_output
from ._output.repair import repair_output
from ._output.whole import write_image
from ._storage.localstore import DirectLocalStore
from ._version import __version__
from ._write.context import Context, default_context
from .errors import (
    BufferFullError,
    ClosedError,
    CorruptError,
    DuplicateImageError,
    FormatVersionError,
    ImageFinalizedError,
    ImageNotFinalError,
    ImageReplacedError,
    InvalidAxesError,
    InvalidChunksError,
    LossyCastError,
    MetadataError,
    NgffWriterError,
    NotAnOutputError,
    NotOursError,
    OutputExistsError,
    OutputInUseError,
    OutputNotFoundError,
    OverlapError,
    ReadOnlyError,
    SampleIndexError,
    ShapeMismatchError,
    SpecError,
    SpecMismatchError,
    StoreError,
    UnclosedOutputWarning,
    UnknownImageError,
    UnsupportedDtypeError,
    WriteError,
)

__all__ = [
    "Blend",
    "BufferFullError",
    "ClosedError",
    "Context",
    "CorruptError",
    "DirectLocalStore",
    "DuplicateImageError",
    "FormatVersionError",
    "Image",
    "ImageFinalizedError",
    "ImageNotFinalError",
    "ImageReplacedError",
    "ImageSpec",
    "InvalidAxesError",
    "InvalidChunksError",
    "LossyCastError",
    "MetadataError",
    "NgffWriterError",
    "NotAnOutputError",
    "NotOursError",
    "Output",
    "OutputExistsError",
    "OutputInUseError",
    "OutputNotFoundError",
    "OverlapError",
    "Plate",
    "PlateProgress",
    "Progress",
    "Pyramid",
    "ReadOnlyError",
    "SampleIndexError",
    "ShapeMismatchError",
    "SpecError",
    "SpecMismatchError",
    "StoreError",
    "UnclosedOutputWarning",
    "UnknownImageError",
    "UnsupportedDtypeError",
    "WriteError",
    "__version__",
    "default_context",
    "open_output",
    "repair_output",
    "write_image",
]
