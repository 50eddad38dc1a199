"""The exceptions ngff-writer raises.

Every error derives from :class:`NgffWriterError` and from the builtin a caller
would reach for, so ``except ValueError`` keeps working::

    NgffWriterError
    ├── StoreError (OSError)                        the store failed or holds something unusable
    │   ├── OutputExistsError (FileExistsError)     creating over existing data, or another job's
    │   │   └── NotOursError                        replacing data ngff-writer did not write
    │   ├── OutputInUseError                        replacing what a live writer is writing
    │   ├── ImageReplacedError                      the image was deleted or replaced under a writer
    │   ├── OutputNotFoundError (FileNotFoundError) reopening a missing output
    │   ├── ReadOnlyError (PermissionError)         writing to an output opened with mode="r"
    │   ├── CorruptError                            a document ngff-writer needs is unreadable
    │   └── FormatVersionError                      bookkeeping of another ngff-writer version
    ├── SpecError (ValueError)                      a declaration that cannot be stored
    │   ├── InvalidAxesError
    │   ├── InvalidChunksError
    │   ├── UnsupportedDtypeError (TypeError)
    │   ├── SpecMismatchError                       resuming with different settings
    │   └── MetadataError                           metadata ome-zarr-models rejects
    ├── UnknownImageError (KeyError)
    ├── DuplicateImageError (FileExistsError)
    ├── WriteError (ValueError)                     a write that was refused; nothing was stored
    │   ├── ShapeMismatchError
    │   ├── SampleIndexError (IndexError)
    │   ├── LossyCastError (TypeError)
    │   ├── ImageFinalizedError                     (no longer raised: see its docstring)
    │   ├── ImageNotFinalError                      editing the metadata of an image not final yet
    │   ├── OverlapError                            two different tiles overlap (crop mode)
    │   └── BufferFullError (MemoryError)           partial chunks past max_buffer_bytes
    └── ClosedError (RuntimeError)                  using an output after close()

Every check runs before the first byte is written, so a refused call leaves the
store exactly as it was. Whatever a storage backend raises (``OSError``, botocore's
errors...) reaches the caller as a ``StoreError`` naming the operation and the key, with
the backend's exception as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "BufferFullError",
    "ClosedError",
    "CorruptError",
    "DuplicateImageError",
    "FormatVersionError",
    "ImageFinalizedError",
    "ImageNotFinalError",
    "ImageReplacedError",
    "InvalidAxesError",
    "InvalidChunksError",
    "LossyCastError",
    "MetadataError",
    "NgffWriterError",
    "NotAnOutputError",
    "NotOursError",
    "OutputExistsError",
    "OutputInUseError",
    "OutputNotFoundError",
    "OverlapError",
    "ReadOnlyError",
    "SampleIndexError",
    "ShapeMismatchError",
    "SpecError",
    "SpecMismatchError",
    "StoreError",
    "UnknownImageError",
    "UnsupportedDtypeError",
    "UnclosedOutputWarning",
    "WriteError",
]


class NgffWriterError(Exception):
    """Base of every error raised by ngff-writer."""


class StoreError(NgffWriterError, OSError):
    """The output store cannot be opened or used as asked."""


class CorruptError(StoreError):
    """A document ngff-writer needs (metadata, a log segment) cannot be read.

    Attributes
    ----------
    key
        The store key of the unreadable document.
    """

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class FormatVersionError(StoreError):
    """An image's bookkeeping was written by an ngff-writer this version cannot continue."""


class OutputExistsError(StoreError, FileExistsError):
    """Creating an output where data already exists (``mode="w-"``), or an image that holds
    another job's data (another fingerprint) without ``overwrite=True``."""


class NotOursError(OutputExistsError):
    """``mode="w"`` or ``overwrite=True`` on data ngff-writer did not write; nothing was deleted.

    Attributes
    ----------
    entries
        A few of the paths that would have been deleted.
    """

    def __init__(self, message: str, *, entries: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.entries = entries


class OutputInUseError(StoreError):
    """Replacing an output or image that a live writer is writing (pass ``force=True``)."""


class ImageReplacedError(StoreError):
    """The image was deleted or declared anew while this handle wrote to it.

    What the handle wrote since is not part of the image now; it never reports the
    image complete.
    """


class OutputNotFoundError(StoreError, FileNotFoundError):
    """Reopening (``mode="a"`` or ``"r"``) an output that does not exist."""


class NotAnOutputError(StoreError):
    """Opening a store that holds data but no ngff-writer image (``mode="a"`` or ``"r"``)."""


class ReadOnlyError(StoreError, PermissionError):
    """Writing to an output opened read-only, or into an array an image handed out."""


class SpecError(NgffWriterError, ValueError):
    """An image declaration that cannot be stored as valid OME-Zarr."""


class InvalidAxesError(SpecError):
    """Axes that break the OME-NGFF axis rules or do not match the shape."""


class InvalidChunksError(SpecError):
    """Chunks or shards that do not fit the image or the write unit."""


class UnsupportedDtypeError(SpecError, TypeError):
    """A data type OME-Zarr viewers cannot display (complex, object, strings...)."""


class SpecMismatchError(SpecError):
    """An image exists in the store with settings other than the ones given."""


class MetadataError(SpecError):
    """NGFF metadata that ome-zarr-models rejects; checked before it is written."""


class UnknownImageError(NgffWriterError, KeyError):
    """No image of that name was declared in this output."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DuplicateImageError(NgffWriterError, FileExistsError):
    """An image of that name already exists in this output."""


class WriteError(NgffWriterError, ValueError):
    """A write that was refused before anything was stored."""


class ShapeMismatchError(WriteError):
    """The array does not have the shape of the slot it is written to."""


class SampleIndexError(WriteError, IndexError):
    """A sample index outside ``[0, n_samples)``."""


class LossyCastError(WriteError, TypeError):
    """Converting the array to the image dtype would lose information."""


class ImageFinalizedError(WriteError):
    """The image is complete and final; its data can no longer change.

    No longer raised: a write into a complete image is a retry of the job that made it
    (accepted, nothing changes), and another job is refused when it declares the image
    (:class:`OutputExistsError`). Kept so that ``except ImageFinalizedError`` still works.
    """


class ImageNotFinalError(WriteError):
    """The image is still being written: its display metadata can be edited once it is final."""


class OverlapError(WriteError):
    """Two different tiles' valid parts overlap (crop mode stores each pixel once)."""


class BufferFullError(WriteError, MemoryError):
    """Buffering a tile part would exceed ``max_buffer_bytes`` (``buffer_policy="error"``)."""


class ClosedError(NgffWriterError, RuntimeError):
    """The output was closed."""


class UnclosedOutputWarning(UserWarning):
    """An output was not closed: ngff-writer closed it when it was dropped or at exit.

    Its writes were stored and recorded then. Use ``with open_output(...)`` or call
    :meth:`~ngff_writer.Output.close` to close it at a point of your choosing.
    """
