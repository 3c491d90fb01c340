"""What an agent may pass as an image: resolved safely, in one place.

A tool argument is written by a model, and a model can be steered by whatever text it reads
(a web page, a document, a user). So the string it passes as "the image" is treated as
untrusted, and turned into something :func:`~langchain_deepseek_ocr._inputs.load_image`
accepts only under an :class:`ImageSourcePolicy`:

* **a local path** -- only a regular file that lies under one of ``allowed_roots`` (the
  current directory by default). The path is resolved first (``~``, ``..`` and every symlink,
  like :meth:`pathlib.Path.resolve`) and the *resolved* path is checked, so ``../x``, an
  absolute path elsewhere, or a symlink that leads out of the root is refused -- with the same
  error whether or not the target exists, so the refusal is not an oracle for files outside
  the roots. Hidden files and folders (a component starting with ``.``) are refused unless
  ``allow_hidden``; directories, FIFOs, sockets and devices are refused. Relative paths are
  looked up under each root in turn. :func:`read_vetted_file` then opens the file without
  following a symlink in its last component, without blocking on a FIFO, and (on Linux) checks
  the path of the descriptor it actually opened, so a file swapped between the check and the
  open is refused too. Hard links cannot be told from ordinary files and are not refused.
* **a ``data:`` URI** -- passed through unchanged; ``_inputs`` decodes it strictly and applies
  the size caps.
* **an http(s) URL** -- only with ``allow_urls=True``. Credentials in the URL are refused. The
  host name is resolved once per request (:func:`resolve_host`); every address it resolves to
  must be a public internet address: loopback, private (RFC 1918, unique-local), shared
  (100.64/10), link-local (169.254/16 -- cloud metadata services -- and fe80::/10), multicast,
  reserved and unspecified addresses are refused, including when hidden in IPv6 (IPv4-mapped
  ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, Teredo, NAT64 ``64:ff9b::/96``). The connection is
  then made **to the vetted address itself** (the URL's host is replaced by the IP; the
  ``Host`` header and, for https, the TLS server name and certificate check keep the original
  name), so a DNS answer that changes between the check and the connection (DNS rebinding)
  cannot redirect it. Redirects are not followed by the HTTP client: each ``Location`` is
  checked the same way (scheme, credentials, resolution, addresses), at most ``max_redirects``
  times. Proxy settings from the environment are ignored (a proxy would resolve the name
  itself, defeating the check). The response must have an allowed ``Content-Type``
  (``image/*`` and ``application/pdf`` by default); its body is streamed and abandoned past
  ``max_url_bytes`` (a ``Content-Length`` over the cap is refused before reading), and the
  whole download, redirects included, must finish within ``url_timeout`` seconds. Name
  resolution itself uses the system resolver, whose own timeout applies.
  ``allowed_networks`` lists networks exempt from the address check (an intranet image
  server, or ``127.0.0.0/8`` in tests).

Refusals raise :class:`AccessDeniedError`, failed downloads :class:`InputFetchError`; both are
:class:`~langchain_deepseek_ocr.InputError` subclasses, so callers that already catch input
errors catch these too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from langchain_deepseek_ocr._errors import (
    AccessDeniedError,
    InputFetchError,
    InputNotFoundError,
    InputTooLargeError,
    UnsupportedInputError,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ImageSourcePolicy",
    "afetch_url",
    "aresolve_image_argument",
    "fetch_url",
    "read_vetted_file",
    "resolve_host",
    "resolve_image_argument",
    "resolve_local_path",
]

_MAX_SHOWN = 200  # how much of an argument an error message repeats
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
# Schemes recognised even without "//" (file:/etc/passwd, javascript:..., mailto:...).
# fmt: off
_KNOWN_SCHEMES = frozenset((
    "http", "https", "file", "ftp", "ftps", "sftp", "tftp", "gopher", "dict", "ldap", "ldaps",
    "smb", "jar", "netdoc", "mailto", "javascript", "vbscript", "ws", "wss", "php", "phar",
    "expect", "glob", "s3", "gs", "blob", "about", "chrome",
))
# fmt: on
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class ImageSourcePolicy(BaseModel):
    """What an untrusted "image" argument (from a model, a user) may point to.

    Attributes:
        allowed_roots: Folders local files may be read from (resolved when the policy is
            made; default: the current directory then). Empty: no local files at all.
        allow_urls: Download http(s) URLs (off by default).
        max_url_bytes: The largest download accepted, in bytes.
        url_timeout: Seconds the whole download may take, redirects included.
        max_redirects: Redirects followed (each one re-checked).
        allowed_content_types: Media types a download may have; ``type/*`` patterns allowed.
        allowed_networks: Networks (CIDR) exempt from the public-address check, e.g.
            ``["10.20.0.0/16"]`` for an intranet image server. Empty by default.
        allow_hidden: Read files in hidden folders or with hidden names (``.name``).
    """

    model_config = ConfigDict(frozen=True)

    allowed_roots: list[Path] = Field(default_factory=lambda: [Path.cwd()])
    """Folders local files may be read from."""
    allow_urls: bool = False
    """Download http(s) URLs (off by default)."""
    max_url_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    """The largest download accepted, in bytes (20 MiB)."""
    url_timeout: float = Field(default=20.0, gt=0)
    """Seconds the whole download may take, redirects included."""
    max_redirects: int = Field(default=5, ge=0, le=20)
    """Redirects followed, each one checked like the first URL."""
    allowed_content_types: tuple[str, ...] = ("image/*", "application/pdf")
    """Media types a download may have (``type/*`` patterns allowed)."""
    allowed_networks: tuple[str, ...] = ()
    """Networks (CIDR) exempt from the public-address check."""
    allow_hidden: bool = False
    """Read hidden files and files in hidden folders."""

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _roots(cls, value: Any) -> list[Path]:
        if isinstance(value, (str, os.PathLike)):
            value = [value]
        return [Path(os.path.realpath(Path(os.fspath(v)).expanduser())) for v in value]

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        return tuple(str(ipaddress.ip_network(str(v), strict=False)) for v in value)

    @field_validator("allowed_content_types", mode="before")
    @classmethod
    def _content_types(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        return tuple(str(v).strip().lower() for v in value)

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The exempt networks, parsed."""
        return [ipaddress.ip_network(n) for n in self.allowed_networks]

    def roots_text(self) -> str:
        """The allowed folders, for messages."""
        return ", ".join(str(r) for r in self.allowed_roots) or "(none)"


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def _shown(value: str) -> str:
    return value if len(value) <= _MAX_SHOWN else f"{value[: _MAX_SHOWN - 1]}…"


def _scheme(text: str) -> str | None:
    """The URL scheme of ``text`` if it is a URL (not a path with a colon in it)."""
    match = _SCHEME_RE.match(text)
    if match is None:
        return None
    scheme = match.group(1).lower()
    if scheme in _KNOWN_SCHEMES or text[match.end() : match.end() + 2] == "//":
        return scheme
    return None


def _classify(value: object) -> tuple[str, str]:
    """Return ``(kind, text)``: kind is ``data``, ``url``, ``file-url`` or ``path``."""
    if not isinstance(value, str):
        raise UnsupportedInputError(
            f"the image argument must be a string (a path, URL or data: URI), "
            f"got {type(value).__name__}",
            source=f"<{type(value).__name__}>",
        )
    text = value.strip()
    if not text:
        raise UnsupportedInputError("the image argument is empty", source="<empty>")
    if text[:5].lower() == "data:":
        return "data", text
    scheme = _scheme(text)
    if scheme is None:
        return "path", text
    if scheme in ("http", "https"):
        return "url", text
    if scheme == "file":
        return "file-url", text
    raise AccessDeniedError(
        f"the URL scheme {scheme!r} is not supported; pass a file path, an http(s) URL or a "
        "data: URI",
        source=_shown(text),
    )


def _file_url_path(text: str) -> str:
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise AccessDeniedError(
            f"a file: URL on another host ({parts.netloc!r}) cannot be read",
            source=_shown(text),
        )
    return unquote(parts.path)


def resolve_image_argument(value: str, policy: ImageSourcePolicy) -> Path | str | bytes:
    """Turn an untrusted image argument into something ``load_image`` accepts.

    Args:
        value: What the model (or user) passed: a file path, a ``file:`` URL, an http(s)
            URL or a ``data:`` URI.
        policy: What may be read.

    Returns:
        The resolved :class:`~pathlib.Path` of a vetted local file (read it with
        :func:`read_vetted_file`), the ``data:`` URI unchanged, or the downloaded bytes.

    Raises:
        AccessDeniedError: The policy refuses it.
        InputNotFoundError: No such file under the roots, or not a regular file.
        InputFetchError: A URL could not be downloaded.
        InputTooLargeError: A download over ``max_url_bytes``.
        UnsupportedInputError: Not a string, empty, a NUL in a path, or a download whose
            content type is not allowed.
    """
    kind, text = _classify(value)
    if kind == "data":
        return text
    if kind == "url":
        return fetch_url(text, policy)
    if kind == "file-url":
        return resolve_local_path(_file_url_path(text), policy, shown=text)
    return resolve_local_path(text, policy)


async def aresolve_image_argument(value: str, policy: ImageSourcePolicy) -> Path | str | bytes:
    """Asynchronous :func:`resolve_image_argument` (URLs are downloaded asynchronously)."""
    kind, text = _classify(value)
    if kind == "url":
        return await afetch_url(text, policy)
    return resolve_image_argument(text, policy)


# --------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------


def _root_of(path: Path, roots: Sequence[Path]) -> Path | None:
    for root in roots:
        if path == root or path.is_relative_to(root):
            return root
    return None


def _denied_path(shown: str, policy: ImageSourcePolicy) -> AccessDeniedError:
    return AccessDeniedError(
        f"this path is outside the folders files may be read from ({policy.roots_text()}); "
        "pass a path under one of them",
        source=_shown(shown),
    )


def _kind_of(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(what: str, shown: str) -> InputNotFoundError:
    return InputNotFoundError(
        f"this path is {what}, not a regular file; pass the path of an image or PDF file",
        source=_shown(shown),
    )


def resolve_local_path(
    value: str | os.PathLike[str], policy: ImageSourcePolicy, *, shown: str | None = None
) -> Path:
    """Resolve a path and check it against the policy; return the resolved path.

    The order of the checks matters: containment is decided on the resolved path before
    anything is said about existence, so paths outside the roots all get the same refusal.

    Args:
        value: The path as given (relative paths are looked up under each root in turn).
        policy: The allowed roots and whether hidden files may be read.
        shown: How to name the input in errors (default: ``value``).

    Returns:
        The resolved, absolute path of a regular file under an allowed root.

    Raises:
        AccessDeniedError: Outside the roots, or hidden.
        InputNotFoundError: No such file, a symlink loop, or not a regular file.
        UnsupportedInputError: A NUL character in the path.
    """
    raw = os.fspath(value)
    shown = raw if shown is None else shown
    if "\x00" in raw:
        raise UnsupportedInputError(
            "not a valid path: it contains a NUL character", source=_shown(shown)
        )
    roots = policy.allowed_roots
    if not roots:
        raise AccessDeniedError(
            "reading local files is not allowed here (no allowed folders)", source=_shown(shown)
        )
    path = Path(raw).expanduser()
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    inside: list[tuple[Path, Path]] = []
    for candidate in candidates:
        try:
            real = Path(os.path.realpath(candidate))
        except (OSError, ValueError) as exc:
            raise InputNotFoundError(f"not a usable path ({exc})", source=_shown(shown)) from exc
        root = _root_of(real, roots)
        if root is not None:
            inside.append((real, root))
    if not inside:
        raise _denied_path(shown, policy)
    chosen = next(((r, root) for r, root in inside if os.path.lexists(r)), None)
    if chosen is None:
        raise InputNotFoundError(
            f"no such file under the allowed folders ({policy.roots_text()})",
            source=_shown(shown),
        )
    real, root = chosen
    if not policy.allow_hidden and any(p.startswith(".") for p in real.relative_to(root).parts):
        raise AccessDeniedError(
            "hidden files and folders (names starting with '.') are not readable here",
            source=_shown(shown),
        )
    try:
        st = real.stat()
    except FileNotFoundError as exc:
        raise InputNotFoundError("no such file (a broken symlink)", source=_shown(shown)) from exc
    except PermissionError as exc:
        raise InputNotFoundError(
            "permission denied while looking up this path", source=_shown(shown)
        ) from exc
    except OSError as exc:  # ELOOP, ENAMETOOLONG, ...
        reason = "a symlink loop" if exc.errno == getattr(os, "ELOOP", 40) else exc.strerror
        raise InputNotFoundError(f"not a usable path ({reason})", source=_shown(shown)) from exc
    what = _kind_of(st.st_mode)
    if what is not None:
        raise _not_regular(what, shown)
    return real


def _fd_path(fd: int) -> Path | None:
    """The path of an open descriptor, where the system says (Linux /proc)."""
    link = f"/proc/self/fd/{fd}"
    try:
        return Path(link).readlink()
    except OSError:
        return None


def read_vetted_file(
    path: Path, policy: ImageSourcePolicy, *, max_bytes: int, shown: str | None = None
) -> bytes:
    """Read a file returned by :func:`resolve_local_path`, closing the check-to-open race.

    The file is opened without following a symlink in its last component and without
    blocking (a FIFO swapped in cannot hang the call); the descriptor must be a regular file
    and, where the system can tell (Linux), its real path must still be under an allowed root.

    Args:
        path: The resolved path.
        policy: The policy it was checked against.
        max_bytes: The largest file accepted.
        shown: How to name the input in errors (default: the path).

    Returns:
        The file's content.

    Raises:
        AccessDeniedError: The file moved out of the roots between the check and the open.
        InputNotFoundError: It vanished or is no longer a regular file.
        InputTooLargeError: Over ``max_bytes``.
    """
    shown = str(path) if shown is None else shown
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_BINARY", 0)
    )
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise InputNotFoundError("no such file", source=_shown(shown)) from exc
    except PermissionError as exc:
        raise InputNotFoundError(
            "permission denied: the file cannot be opened for reading", source=_shown(shown)
        ) from exc
    except OSError as exc:  # ELOOP: the last component became a symlink
        raise AccessDeniedError(
            f"the file changed while it was being opened ({exc.strerror})", source=_shown(shown)
        ) from exc
    try:
        st = os.fstat(fd)
        what = _kind_of(st.st_mode)
        if what is not None:
            raise _not_regular(what, shown)
        opened = _fd_path(fd)
        if opened is not None and _root_of(opened, policy.allowed_roots) is None:
            raise _denied_path(shown, policy)
        if st.st_size > max_bytes:
            raise InputTooLargeError(
                f"the file is {st.st_size:,} bytes, over the limit of {max_bytes:,} "
                "(InputLimits.max_bytes)",
                source=_shown(shown),
            )
        with os.fdopen(os.dup(fd), "rb") as stream:
            data = stream.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InputTooLargeError(
            f"the file is over the limit of {max_bytes:,} bytes (InputLimits.max_bytes)",
            source=_shown(shown),
        )
    return data


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


def resolve_host(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to, in the resolver's order, without duplicates.

    The one place names are resolved (tests replace it). Raises :class:`OSError`
    (``socket.gaierror``) when the name does not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _non_public_reason(ip: _IP) -> str | None:
    """Why ``ip`` is not a public internet address (a phrase), or None if it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = _non_public_reason(inner)
            return None if reason is None else f"{reason} (IPv4 {inner} inside an IPv6 address)"
    checks = (
        ("is_unspecified", "unspecified address"),
        ("is_loopback", "loopback address"),
        ("is_link_local", "link-local address (the range of cloud metadata services)"),
        ("is_multicast", "multicast address"),
        ("is_reserved", "reserved address"),
        ("is_private", "private address"),
    )
    for attribute, reason in checks:
        if getattr(ip, attribute):
            return reason
    if not ip.is_global:
        return "address that is not publicly routable"
    return None


def _check_address(address: str, host: str, policy: ImageSourcePolicy, shown: str) -> None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError as exc:
        raise InputFetchError(
            f"the host {host!r} resolved to {address!r}, which is not an IP address",
            source=shown,
        ) from exc
    if any(ip in net for net in policy.networks() if net.version == ip.version):
        return
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        mapped = ip.ipv4_mapped
        if any(mapped in net for net in policy.networks() if net.version == 4):
            return
    reason = _non_public_reason(ip)
    if reason is not None:
        shown_ip = address.split("%", 1)[0]
        where = shown_ip if host == shown_ip else f"{host!r} resolves to {shown_ip}"
        raise AccessDeniedError(
            f"{where}, a {reason}; URLs may only point to public internet addresses",
            source=shown,
        )


@dataclass(frozen=True)
class _Target:
    """One URL to request: its parts, and how to reach it."""

    url: httpx.URL
    host: str
    port: int
    host_header: str


def _parse_url(url: str, policy: ImageSourcePolicy, shown: str) -> _Target:
    import httpx

    if not policy.allow_urls:
        raise AccessDeniedError(
            "URLs are not allowed here (allow_urls=False); pass a local file path, a data: "
            "URI, or attach the image to the conversation",
            source=shown,
        )
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsupportedInputError(f"not a valid URL ({exc})", source=shown) from exc
    if parsed.scheme not in ("http", "https"):
        raise AccessDeniedError(
            f"the URL scheme {parsed.scheme!r} is not supported; only http and https are",
            source=shown,
        )
    if parsed.userinfo:
        raise AccessDeniedError("URLs with credentials (user:password@) are refused", source=shown)
    host = parsed.host
    if not host:
        raise UnsupportedInputError("the URL has no host", source=shown)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    name = f"[{host}]" if ":" in host else host
    header = name if parsed.port is None else f"{name}:{parsed.port}"
    return _Target(parsed, host, port, header)


def _vet_addresses(
    target: _Target, addresses: Sequence[str], policy: ImageSourcePolicy, shown: str
) -> str:
    if not addresses:
        raise InputFetchError(f"the host {target.host!r} has no address", source=shown)
    for address in addresses:  # every answer must pass, not just the one used
        _check_address(address, target.host, policy, shown)
    return addresses[0].split("%", 1)[0]


def _lookup_error(target: _Target, exc: BaseException, shown: str) -> InputFetchError:
    return InputFetchError(f"the host {target.host!r} cannot be resolved ({exc})", source=shown)


def _request(client: httpx.Client | httpx.AsyncClient, target: _Target, ip: str) -> httpx.Request:
    """A GET to the vetted address, carrying the original host name."""
    extensions: dict[str, Any] = {}
    if target.url.scheme == "https":
        extensions["sni_hostname"] = target.host
    return client.build_request(
        "GET",
        target.url.copy_with(host=ip),
        headers={"Host": target.host_header},
        extensions=extensions,
    )


def _timeout(deadline: float, shown: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise InputFetchError(
            "the download timed out (ImageSourcePolicy.url_timeout)", source=shown
        )
    return remaining


def _client_kwargs(policy: ImageSourcePolicy) -> dict[str, Any]:
    import httpx

    return {
        "follow_redirects": False,
        "trust_env": False,  # no environment proxies: a proxy would resolve names itself
        "timeout": httpx.Timeout(policy.url_timeout),
        "headers": {
            "User-Agent": "langchain-deepseek-ocr",
            "Accept": ", ".join(policy.allowed_content_types),
        },
    }


def _redirect_target(
    response: httpx.Response, current: str, hops: int, policy: ImageSourcePolicy, shown: str
) -> str | None:
    """The next URL for a redirect response (None if the response is not a redirect)."""
    import httpx

    if response.status_code not in (301, 302, 303, 307, 308):
        return None
    location = response.headers.get("location")
    if not location:
        raise InputFetchError(
            f"HTTP {response.status_code} redirect without a Location header", source=shown
        )
    if hops >= policy.max_redirects:
        raise InputFetchError(
            f"too many redirects (more than {policy.max_redirects})", source=shown
        )
    try:
        return str(httpx.URL(current).join(location))
    except (httpx.InvalidURL, ValueError) as exc:
        raise InputFetchError(
            f"the redirect Location is not a valid URL ({exc})", source=shown
        ) from exc


def _check_response(response: httpx.Response, policy: ImageSourcePolicy, shown: str) -> None:
    """Refuse error statuses, unwanted media types and oversized declared lengths."""
    if response.status_code >= 400 or response.status_code < 200:
        raise InputFetchError(
            f"the server answered HTTP {response.status_code} {response.reason_phrase}".rstrip(),
            source=shown,
        )
    if response.status_code >= 300:
        raise InputFetchError(
            f"the server answered HTTP {response.status_code} (not a downloadable file)",
            source=shown,
        )
    media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not any(fnmatchcase(media, pattern) for pattern in policy.allowed_content_types):
        allowed = ", ".join(policy.allowed_content_types)
        raise UnsupportedInputError(
            f"the URL serves {media or 'no content type'!r}, not an image or PDF "
            f"(allowed: {allowed})",
            source=shown,
        )
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit():
        size = int(declared)
        if size > policy.max_url_bytes:
            raise InputTooLargeError(
                f"the download is {size:,} bytes, over the limit of {policy.max_url_bytes:,} "
                "(ImageSourcePolicy.max_url_bytes)",
                source=shown,
            )


class _Body:
    """Collects a streamed body, enforcing the size cap and the deadline."""

    def __init__(self, policy: ImageSourcePolicy, deadline: float, shown: str):
        self.policy = policy
        self.deadline = deadline
        self.shown = shown
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.policy.max_url_bytes:
            raise InputTooLargeError(
                f"the download is over the limit of {self.policy.max_url_bytes:,} bytes "
                "(ImageSourcePolicy.max_url_bytes)",
                source=self.shown,
            )
        self.parts.append(chunk)
        _timeout(self.deadline, self.shown)

    def data(self) -> bytes:
        return b"".join(self.parts)


def _transport_error(exc: httpx.HTTPError, shown: str) -> InputFetchError:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return InputFetchError(
            "the download timed out (ImageSourcePolicy.url_timeout)", source=shown
        )
    detail = str(exc).strip() or type(exc).__name__
    return InputFetchError(f"the download failed ({detail})", source=shown)


def fetch_url(url: str, policy: ImageSourcePolicy) -> bytes:
    """Download an image or PDF from a public http(s) URL under ``policy`` (see the module).

    Raises:
        AccessDeniedError: URLs are off, a bad scheme, credentials, or a non-public address
            (for the URL or any redirect).
        InputFetchError: Resolution, connection, status, timeout or redirect failures.
        InputTooLargeError: Over ``max_url_bytes``.
        UnsupportedInputError: A content type that is not allowed, or a malformed URL.
    """
    import httpx

    shown = _shown(url)
    target = _parse_url(url, policy, shown)
    deadline = time.monotonic() + policy.url_timeout
    current = url
    with httpx.Client(**_client_kwargs(policy)) as client:
        for hops in range(policy.max_redirects + 1):
            try:
                addresses = resolve_host(target.host, target.port)
            except OSError as exc:
                raise _lookup_error(target, exc, shown) from exc
            ip = _vet_addresses(target, addresses, policy, shown)
            request = _request(client, target, ip)
            request.extensions["timeout"] = httpx.Timeout(_timeout(deadline, shown)).as_dict()
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, shown) from exc
            try:
                following = _redirect_target(response, current, hops, policy, shown)
                if following is None:
                    _check_response(response, policy, shown)
                    body = _Body(policy, deadline, shown)
                    for chunk in response.iter_bytes():
                        body.add(chunk)
                    return body.data()
            except httpx.HTTPError as exc:
                raise _transport_error(exc, shown) from exc
            finally:
                response.close()
            current = following
            target = _parse_url(current, policy, shown)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


async def afetch_url(url: str, policy: ImageSourcePolicy) -> bytes:
    """Asynchronous :func:`fetch_url` (the same checks; name resolution in the executor)."""
    import httpx

    shown = _shown(url)
    target = _parse_url(url, policy, shown)
    deadline = time.monotonic() + policy.url_timeout
    current = url
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(**_client_kwargs(policy)) as client:
        for hops in range(policy.max_redirects + 1):
            try:
                addresses = await asyncio.wait_for(
                    loop.run_in_executor(None, resolve_host, target.host, target.port),
                    _timeout(deadline, shown),
                )
            except TimeoutError as exc:
                raise InputFetchError(
                    "the download timed out while resolving the host", source=shown
                ) from exc
            except OSError as exc:
                raise _lookup_error(target, exc, shown) from exc
            ip = _vet_addresses(target, addresses, policy, shown)
            request = _request(client, target, ip)
            request.extensions["timeout"] = httpx.Timeout(_timeout(deadline, shown)).as_dict()
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, shown) from exc
            try:
                following = _redirect_target(response, current, hops, policy, shown)
                if following is None:
                    _check_response(response, policy, shown)
                    body = _Body(policy, deadline, shown)
                    async for chunk in response.aiter_bytes():
                        body.add(chunk)
                    return body.data()
            except httpx.HTTPError as exc:
                raise _transport_error(exc, shown) from exc
            finally:
                with contextlib.suppress(httpx.HTTPError):
                    await response.aclose()
            current = following
            target = _parse_url(current, policy, shown)
    raise AssertionError("unreachable")  # pragma: no cover
