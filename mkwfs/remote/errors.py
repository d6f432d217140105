"""The mkwfs exception tree, and the errno each error means on the mount.

::

    MkwfsError                      errno EIO unless stated
    ├── ConfigError                 bad option, file or environment (never reaches FUSE)
    ├── ApiError                    anything that went wrong talking to the API (.url)
    │   ├── TransportError          no HTTP answer: refused, reset, timeout, DNS
    │   │   └── Offline             not asked: the mount is offline
    │   ├── ProtocolError           an answer that is not what the API promises
    │   │                           (malformed JSON, wrong shape, short body)
    │   └── HTTPStatusError         an HTTP error status (.status, .server_message)
    │       ├── AuthenticationError 401 and login failures            EACCES
    │       │   ├── LoginFailed     POST /authentication refused the credentials
    │       │   └── TokenRejected   401 with only a token: nothing to log in with
    │       ├── PermissionDenied    403                               EACCES
    │       ├── NotFound            404                               ENOENT
    │       ├── RateLimited         429 (.retry_after seconds, or None)
    │       └── ServerError         5xx and any other unexpected status
    │           └── RangeNotSatisfiable 416, or Feathers' 500 for it: no byte at the start
    ├── ContentError                the local content cache failed (disk full, I/O)
    ├── ArchiveError                a download is not a readable ZIP (corrupt, unsupported)
    ├── NoSuchEntry                 no such name or inode in the tree             ENOENT
    ├── NotADirectory               a path goes through a file                    ENOTDIR
    ├── IsADirectory                a file operation on a directory               EISDIR
    ├── NotASymlink                 readlink of something that is not a link      EINVAL
    ├── NoSuchAttribute             no such extended attribute                    ENODATA
    └── UnsupportedAttribute        an attribute namespace mkwfs has not (security.,
                                    system.: labels, ACLs)                        ENOTSUP

Every layer catches what the layer below raises and re-raises one of these with
``raise ... from exc``; the FUSE edge (``fs.py``) turns ``.errno`` into ``FUSEError``.
Messages never contain a token or a password.
"""

from __future__ import annotations

import errno as _errno


class MkwfsError(Exception):
    """Base of every error mkwfs raises on purpose."""

    errno: int = _errno.EIO


class ConfigError(MkwfsError):
    """Options, environment or config file are unusable."""


class ContentError(MkwfsError):
    """The local content cache could not store or read a download."""


class ArchiveError(MkwfsError):
    """A download cannot be shown unpacked: not a ZIP, corrupt, or a member mkwfs cannot
    decompress (encrypted, unsupported method). ``download_id`` names the archive."""

    def __init__(self, message: str, *, download_id: int) -> None:
        super().__init__(message)
        self.download_id = download_id


class NoSuchEntry(MkwfsError):
    """The tree has no such name, or the kernel asked about an inode it had forgotten."""

    errno = _errno.ENOENT


class NotADirectory(MkwfsError):
    errno = _errno.ENOTDIR


class IsADirectory(MkwfsError):
    errno = _errno.EISDIR


class NotASymlink(MkwfsError):
    errno = _errno.EINVAL


class NoSuchAttribute(MkwfsError):
    """The node has no extended attribute of that name (the API left the field out)."""

    errno = _errno.ENODATA


class UnsupportedAttribute(MkwfsError):
    """Extended attributes outside ``user.`` (security labels, ACLs) do not exist here.
    ENOTSUP, unlike ENODATA, tells ``ls -l`` and file managers to stop asking for the
    rest of the mount: two FUSE requests fewer for every file listed."""

    errno = _errno.ENOTSUP


class ApiError(MkwfsError):
    """A request to the MetaKraftwerk API failed. ``url`` has no credentials in it."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class TransportError(ApiError):
    """The server gave no HTTP answer: connection refused or reset, timeout, DNS failure."""


class Offline(TransportError):
    """Not asked: the mount is offline (the server was out of reach at mount time). Not
    transient: nothing retries it; the mount goes online once the server answers."""


class ProtocolError(ApiError):
    """The server answered, but not with what the API promises."""


class HTTPStatusError(ApiError):
    """The server answered with an error status.

    ``server_message`` is the server's own words: the ``message`` of a Feathers error
    body, the text of an HTML or plain body (shortened), or ``""`` for an empty body.
    """

    def __init__(self, message: str, *, url: str, status: int, server_message: str = "") -> None:
        super().__init__(message, url=url)
        self.status = status
        self.server_message = server_message


class AuthenticationError(HTTPStatusError):
    errno = _errno.EACCES


class LoginFailed(AuthenticationError):
    """``POST /authentication`` refused the email and password."""


class TokenRejected(AuthenticationError):
    """The API answered 401 to a token, and there are no credentials to log in again."""


class PermissionDenied(HTTPStatusError):
    errno = _errno.EACCES


class NotFound(HTTPStatusError):
    errno = _errno.ENOENT


class RateLimited(HTTPStatusError):
    """429. ``retry_after`` is the server's ``Retry-After`` in seconds, when it gave one."""

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int,
        server_message: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, url=url, status=status, server_message=server_message)
        self.retry_after = retry_after


class ServerError(HTTPStatusError):
    """5xx, or any status the client has no better name for."""


class RangeNotSatisfiable(ServerError):
    """The file has no byte where the range asked for starts: 416, or the 500
    ``GeneralError`` "Range Not Satisfiable" that Feathers' error handler makes of Express's
    416. ``size`` is the file's size when the answer said it (``Content-Range: bytes */N``)."""

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int,
        server_message: str = "",
        size: int | None = None,
    ) -> None:
        super().__init__(message, url=url, status=status, server_message=server_message)
        self.size = size
