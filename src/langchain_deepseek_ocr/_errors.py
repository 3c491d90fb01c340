"""The exception hierarchy of langchain-deepseek-ocr, documented in one place.

Every error the package raises on purpose derives from :class:`DeepSeekOCRError`, so a
caller can catch one class and still tell the cases apart::

    DeepSeekOCRError                 root; carries ``source`` and ``page`` when known
    ├── InputError                   the input cannot become a page image
    │   ├── UnsupportedInputError    a type or file format the package does not read
    │   ├── InputNotFoundError       a path that does not exist or is not a regular file
    │   ├── InputTooLargeError       over the byte or pixel cap (decompression bombs)
    │   ├── CorruptInputError        a truncated / undecodable image or PDF
    │   ├── PageOutOfRangeError      a PDF page number the document does not have
    │   ├── AccessDeniedError        a path/URL outside what the policy allows (tools)
    │   └── InputFetchError          a URL that could not be downloaded
    ├── ConfigurationError           a bad option: unknown task, resolution, device ...
    ├── ModelLoadError               a model folder or hub id that cannot be loaded
    └── EngineError                  the engine failed while running a request
        ├── GenerationError          the model itself failed (shape mismatch, OOM, ...)
        ├── EngineTimeoutError       a request ran past its time limit or was cancelled
        ├── EngineConnectionError    a server could not be reached (refused, reset, DNS)
        └── EngineStatusError        a server answered with an error status or a bad body

Errors carry the context needed to act on them (the input named, the page, the model)
and a message written for a person.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "ConfigurationError",
    "CorruptInputError",
    "DeepSeekOCRError",
    "EngineConnectionError",
    "EngineError",
    "EngineStatusError",
    "EngineTimeoutError",
    "GenerationError",
    "InputError",
    "InputFetchError",
    "InputNotFoundError",
    "InputTooLargeError",
    "ModelLoadError",
    "PageOutOfRangeError",
    "UnsupportedInputError",
]


class DeepSeekOCRError(Exception):
    """Root of every error raised by langchain-deepseek-ocr.

    Args:
        message: What went wrong, for a person.
        source: The input the error is about (a path, ``"<bytes>"``, ``"<PIL image>"``...).
        page: The 0-based page of ``source`` the error is about, when it is a PDF page.
    """

    def __init__(self, message: str, *, source: str | None = None, page: int | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.page = page

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = self.source if self.page is None else f"{self.source} (page {self.page})"
            where = f"{where}: "
        return f"{where}{self.message}"

    def __reduce__(self):  # keep source/page across pickling (process pools)
        return (_rebuild, (type(self), self.message, self.source, self.page))


def _rebuild(cls, message, source, page):
    return cls(message, source=source, page=page)


class InputError(DeepSeekOCRError):
    """The input cannot be turned into a page image."""


class UnsupportedInputError(InputError):
    """The input is of a type or file format the package does not read."""


class InputNotFoundError(InputError):
    """A path that does not exist, or that is not a regular file."""


class InputTooLargeError(InputError):
    """The input is over the byte or pixel cap (a guard against decompression bombs)."""


class CorruptInputError(InputError):
    """The file is an image or PDF, but a truncated or undecodable one."""


class PageOutOfRangeError(InputError):
    """A PDF page number that the document does not have."""


class AccessDeniedError(InputError):
    """The input is outside what the policy allows.

    A path that leaves the allowed folders, a hidden file, a URL while URLs are off, a URL
    scheme other than http(s), credentials in a URL, or a host that resolves to a
    non-public address (loopback, private, link-local / cloud metadata, ...).
    """


class InputFetchError(InputError):
    """A URL could not be downloaded.

    The host does not resolve, the connection fails, the server answers with an error
    status, the download takes longer than the policy allows, or it redirects too often.
    """


class ConfigurationError(DeepSeekOCRError, ValueError):
    """An option is invalid: unknown task or resolution, a resolution the model lacks, ..."""


class ModelLoadError(DeepSeekOCRError):
    """The model (hub id or local folder) cannot be loaded."""


class EngineError(DeepSeekOCRError):
    """The engine failed while running a request."""


class GenerationError(EngineError):
    """The model failed during generation (a shape mismatch, out of memory, ...)."""


class EngineTimeoutError(EngineError, TimeoutError):
    """A request ran past its time limit, or was cancelled."""


class EngineConnectionError(EngineError, ConnectionError):
    """A server could not be reached: connection refused or reset, DNS failure, ..."""


class EngineStatusError(EngineError):
    """A server answered with an error status, or with a body that is not a valid answer.

    Args:
        message: What went wrong.
        status_code: The HTTP status (``None`` for a malformed 200 answer).
        body: The start of the response body, for diagnosis.
        source: The input the request was about.
        page: The page the request was about.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: str | None = None,
        source: str | None = None,
        page: int | None = None,
    ):
        super().__init__(message, source=source, page=page)
        self.status_code = status_code
        self.body = body

    def __reduce__(self):
        state = (self.message, self.status_code, self.body, self.source, self.page)
        return (_rebuild_status, state)


def _rebuild_status(message, status_code, body, source, page):
    return EngineStatusError(message, status_code=status_code, body=body, source=source, page=page)
