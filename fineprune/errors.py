"""Exceptions raised by fineprune.

Every error a person can cause (bad file, no face, wrong model) is a ``FinePruneError``
subclass with a message written for that person; the CLI prints it as one line and exits 2,
the app shows it as a friendly message. Anything else is a bug.
"""


class FinePruneError(Exception):
    """Base class of all expected, user-facing errors."""


class InputDataError(FinePruneError):
    """The person's data cannot be used (missing folder, no usable files, bad labels)."""


class AudioError(InputDataError):
    """An audio clip cannot be used."""


class UnreadableAudioError(AudioError):
    """The bytes are not audio we can decode (not a WAV, truncated header, ...)."""


class EmptyAudioError(AudioError):
    """The clip holds no samples."""


class SilentAudioError(AudioError):
    """The clip holds no speech: silence or a constant (DC) signal."""


class AudioTooShortError(AudioError):
    """The speech in the clip is too short to be a spoken digit."""


class AudioTooLongError(AudioError):
    """The clip is longer than we accept (memory bound)."""


class ImageError(InputDataError):
    """An image cannot be used."""


class UnreadableImageError(ImageError):
    """The bytes are not an image we can decode."""


class ImageTooSmallError(ImageError):
    """The image (or the face in it) is too small to be used."""


class NoFaceError(ImageError):
    """No face was found in the image."""


class ModelFileError(FinePruneError):
    """A model file cannot be loaded (not a torch file, unsafe pickle, unknown format)."""


class UnknownModelError(FinePruneError):
    """The model name is neither a shipped model, a torchvision model, nor a file."""


class ConfigError(FinePruneError):
    """A setting is out of range (sparsity outside [0, 1), unknown criterion, ...)."""


class JobCancelled(FinePruneError):
    """A background job was cancelled by the user."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than we decode (memory bound; guards against decompression bombs)."""


class RecordingLimitError(InputDataError):
    """The session already holds as many recordings as it accepts (memory bound), or a zip holds too much."""


class ExportError(FinePruneError):
    """The model cannot be written in the requested file format (e.g. structured export of a non-VGG network)."""
