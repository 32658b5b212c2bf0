"""The run location: a local folder, a shared mount or an object store, behind one small API.

A run location is a URI, the way Ray's ``storage_path`` is: ``runs/demo`` (a local path),
``/mnt/shared/runs/demo``, ``s3://bucket/runs/demo`` or ``gs://bucket/runs/demo`` (anything
``pyarrow.fs`` resolves). Query parameters go to the file system, e.g.
``s3://bucket/run?endpoint_override=127.0.0.1:9000&scheme=http`` for a MinIO or moto server
(credentials from the usual ``AWS_*`` variables). Every file of a study goes through a
:class:`Location`: results, encoders, logs, the saved config, the report.

Writes are atomic: on a local file system a hidden temporary file with a unique name is
written, flushed and renamed into place; on an object store the whole object is sent at
once and becomes visible only when complete. A reader never sees half a file.

Example:
    >>> run = Location.from_uri("s3://bucket/runs/demo?endpoint_override=127.0.0.1:9000&scheme=http")
    >>> (run / "results" / "trials" / "a.parquet").write_bytes(data)  # doctest: +SKIP
    >>> run.uri
    's3://bucket/runs/demo?endpoint_override=127.0.0.1:9000&scheme=http'
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import posixpath
import re
import shutil
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs


class LocationError(ValueError):
    """A URI that names no reachable file system (a bad scheme, an unreachable bucket)."""


class DiskFull(OSError):
    """No space left where a run writes (ENOSPC); the message names the file and the free space."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28] "
        return str(self.strerror or super().__str__())


DISK_FULL_MESSAGE = "no space left on the device holding"  # how every DiskFull message starts


def disk_full_error(path: str, err: OSError) -> DiskFull:
    """A :class:`DiskFull` for a write to ``path`` that failed with ENOSPC."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free / 2**20
    return DiskFull(
        errno.ENOSPC,
        f"{DISK_FULL_MESSAGE} {folder} ({free:.1f} MiB free) while writing {path}; "
        "free space there (or choose another --out), then rerun the same command to resume",
    )


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_STORE_SCHEME_TYPO = re.compile(r"^(s3|gs|gcs|hdfs|abfs|abfss|file):(?!//)", re.IGNORECASE)  # s3:/x, s3:x
_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@?#\s]*)@")

CREDENTIALS_HINT = (
    "credentials in a URI would be written to logs, events and run_info.json, so raystudy refuses them: "
    "remove the user-info (KEY:SECRET@) and give them as environment variables instead "
    "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, for s3://; "
    "GOOGLE_APPLICATION_CREDENTIALS for gs://)"
)


def redact(text: str) -> str:
    """``text`` with the user-info of every URI in it (``s3://KEY:SECRET@bucket``) replaced by ``***``.

    Example:
        >>> redact("--out s3://AKIA:abc@bucket/run")
        '--out s3://***@bucket/run'
    """
    return _USER_INFO.sub(lambda m: f"{m['scheme']}***@", str(text))


def is_uri(text: str) -> bool:
    """True for ``scheme://...`` (an object store or any pyarrow file system), False for a path."""
    return bool(_SCHEME.match(str(text))) and not str(text).startswith("file://")


@lru_cache(maxsize=16)
def _filesystem(prefix: str) -> pafs.FileSystem:
    """One file system per ``scheme://bucket?query`` (its client is reused)."""
    fs, _ = pafs.FileSystem.from_uri(prefix)
    return fs


class Location:
    """A file or folder of a run location (see the module docstring); immutable, picklable.

    Args:
        fs: the pyarrow file system.
        path: the path inside ``fs`` (``bucket/key`` on S3, absolute on a local disk).
        scheme: ``""`` for a local path, else the URI scheme (``s3``, ``gs``, ...).
        query: the URI's query string (file system options), kept on every child.
    """

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str = "", query: str = "") -> None:
        self.fs, self.path, self.scheme, self.query = fs, path.rstrip("/") or "/", scheme, query

    @classmethod
    def from_uri(cls, uri: str | Path | Location) -> Location:
        """A local path (relative ones are made absolute), ``file://``, or ``scheme://...``."""
        if isinstance(uri, Location):
            return uri
        text = str(uri)
        if _STORE_SCHEME_TYPO.match(text):
            raise LocationError(
                f"{redact(text)}: a URI needs two slashes after the scheme (e.g. s3://bucket/runs/NAME); "
                "for a local folder whose name starts like a scheme, write ./" + redact(text)
            )
        if _USER_INFO.match(text):
            raise LocationError(f"{redact(text)}: {CREDENTIALS_HINT}")
        if text.startswith("file://"):
            text = urlsplit(text).path
        if not is_uri(text):
            return cls(pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()))
        parts = urlsplit(text)
        prefix = f"{parts.scheme}://{parts.netloc}" + (f"?{parts.query}" if parts.query else "")
        try:
            fs = _filesystem(prefix)
        except (ValueError, OSError) as err:
            raise LocationError(
                f"{text}: pyarrow cannot open this location ({str(err).splitlines()[0]}); check "
                "the URI, the endpoint (?endpoint_override=HOST:PORT) and the credentials"
            ) from err
        if parts.scheme in ("s3", "gs", "gcs"):  # bucket/key, without building a second client
            path = f"{parts.netloc}{parts.path}"
        else:
            _, path = pafs.FileSystem.from_uri(f"{parts.scheme}://{parts.netloc}{parts.path}")
        return cls(fs, path, parts.scheme, parts.query)

    def __reduce__(self) -> tuple[Any, tuple[str]]:  # ship the URI, not the client: workers rebuild their own
        return (Location.from_uri, (self.uri,))

    # -- naming ---------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """How to name this location to a user or to :meth:`from_uri` (query kept)."""
        if self.is_local:
            return self.path
        return f"{self.scheme}://{self.path}" + (f"?{self.query}" if self.query else "")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __truediv__(self, part: str) -> Location:
        return Location(self.fs, posixpath.join(self.path, str(part)), self.scheme, self.query)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> Location:
        return Location(self.fs, posixpath.dirname(self.path), self.scheme, self.query)

    @property
    def is_local(self) -> bool:
        """A path on this machine's file system (a local disk or a shared mount)."""
        return self.scheme == ""

    def local_path(self) -> Path:
        """The local :class:`~pathlib.Path` (only for local locations)."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local path")
        return Path(self.path)

    # -- queries --------------------------------------------------------------------------
    def _type(self) -> pafs.FileType:
        kind: pafs.FileType = self.fs.get_file_info(self.path).type
        return kind

    def exists(self) -> bool:
        return bool(self._type() != pafs.FileType.NotFound)

    def is_file(self) -> bool:
        return bool(self._type() == pafs.FileType.File)

    def is_dir(self) -> bool:
        """A folder (on an object store: a prefix with at least one object below it)."""
        return bool(self._type() == pafs.FileType.Directory)

    def iterdir(self) -> list[Location]:
        """The entries right below this folder (empty when it does not exist), sorted by name."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=False)
        infos = self.fs.get_file_info(selector)
        return sorted((Location(self.fs, i.path, self.scheme, self.query) for i in infos), key=lambda x: x.name)

    def glob(self, pattern: str) -> list[Location]:
        """Entries right below this folder whose name matches ``pattern`` (``*.parquet``)."""
        return [c for c in self.iterdir() if fnmatch.fnmatch(c.name, pattern)]

    def files_below(self) -> list[Location]:
        """Every file anywhere below this folder (one recursive listing; empty when it does not exist), by path."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=True)
        infos = self.fs.get_file_info(selector)
        return sorted(
            (Location(self.fs, i.path, self.scheme, self.query) for i in infos if i.type == pafs.FileType.File),
            key=lambda x: x.path,
        )

    # -- reading --------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as fh:
            data: bytes = fh.read()
            return data

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    # -- writing --------------------------------------------------------------------------
    def mkdir(self) -> None:
        """Create this folder and its parents (object stores have no folders: a no-op there)."""
        if self.is_local:
            self.fs.create_dir(self.path, recursive=True)

    def write_bytes(self, data: bytes) -> Location:
        """Write the whole file atomically (replacing it); returns self."""
        if self.is_local:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(self.path).with_name(f".{self.name}.{uuid.uuid4().hex[:12]}.tmp")  # unique per writer
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except OSError as err:
                if err.errno == errno.ENOSPC and not isinstance(err, DiskFull):
                    raise disk_full_error(self.path, err) from err
                raise
            finally:
                tmp.unlink(missing_ok=True)
        else:
            with self.fs.open_output_stream(self.path) as fh:  # visible only once complete
                fh.write(data)
        return self

    def write_text(self, text: str) -> Location:
        return self.write_bytes(text.encode("utf-8"))

    def unlink(self, missing_ok: bool = True) -> None:
        try:
            self.fs.delete_file(self.path)
        except (FileNotFoundError, OSError):
            if not missing_ok or self.exists():
                raise

    def rmtree(self) -> None:
        """Delete this folder and everything below it (nothing when it does not exist)."""
        if self.is_dir():
            self.fs.delete_dir(self.path)

    def move_to(self, target: Location) -> None:
        """Rename. On an object store (no folder renames) a folder is copied object by object,
        and the originals are deleted only once every copy is written; a failed copy raises
        OSError and leaves the folder as it was."""
        if self.is_local or not self.is_dir():
            self.fs.move(self.path, target.path)
            return
        made: set[str] = set()
        for file in self.files_below():
            copy = target.path + file.path[len(self.path) :]
            if posixpath.dirname(copy) not in made:  # a folder marker on a store, a real folder on a mount
                self.fs.create_dir(posixpath.dirname(copy), recursive=True)
                made.add(posixpath.dirname(copy))
            self.fs.copy_file(file.path, copy)
        self.fs.delete_dir(self.path)

    def ray_storage(self) -> dict[str, Any]:
        """``storage_path`` (and ``storage_filesystem`` on object stores) for Ray's RunConfig."""
        if self.is_local:
            return {"storage_path": self.path}
        return {"storage_path": self.path, "storage_filesystem": self.fs}


def as_location(where: str | Path | Location) -> Location:
    """A :class:`Location` from a path, a URI or a Location."""
    return Location.from_uri(where)


@lru_cache(maxsize=2)
def _cached(uri: str, mtime_ns: int | None, size: int) -> bytes:
    return Location.from_uri(uri).read_bytes()


@lru_cache(maxsize=64)
def _cached_sha256(uri: str, mtime_ns: int | None, size: int) -> str:
    return hashlib.sha256(_cached(uri, mtime_ns, size)).hexdigest()


def _stamp(where: str | Path | Location) -> tuple[str, int | None, int]:
    """(URI, modification time, size) of a file: what the caches below are keyed by."""
    location = as_location(where)
    info = location.fs.get_file_info(location.path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{location.uri} does not exist")
    return location.uri, info.mtime_ns, int(info.size or 0)


# Files whose bytes this process was handed (the driver shipped them through Ray's object store):
# URI -> (bytes, SHA-256). They are read from here, not from the file system, which on a node
# without the driver's mounts does not hold them.
_PROVIDED: dict[str, tuple[bytes, str]] = {}


def provide(where: str | Path | Location, data: bytes) -> None:
    """Serve ``data`` as the bytes of the file ``where`` in this process from now on
    (:func:`cached_bytes`, :func:`cached_sha256`, :func:`is_provided`)."""
    _PROVIDED[as_location(where).uri] = (data, hashlib.sha256(data).hexdigest())


def is_provided(where: str | Path | Location) -> bool:
    """True when this process was handed the bytes of ``where`` (:func:`provide`)."""
    return as_location(where).uri in _PROVIDED


def cached_bytes(where: str | Path | Location) -> bytes:
    """The bytes of a file that many trials of one worker read (an encoder, initial weights):
    the bytes handed to this process (:func:`provide`), else fetched once per worker process
    while the file is unchanged (one metadata request per use)."""
    uri = as_location(where).uri
    if uri in _PROVIDED:
        return _PROVIDED[uri][0]
    return _cached(*_stamp(where))


def cached_sha256(where: str | Path | Location) -> str:
    """The SHA-256 of such a file, computed once per worker process while it is unchanged."""
    uri = as_location(where).uri
    if uri in _PROVIDED:
        return _PROVIDED[uri][1]
    return _cached_sha256(*_stamp(where))


def reachable(where: str | Path | Location) -> Location:
    """The location, after one request that proves it can be reached (else a LocationError)."""
    location = as_location(where)
    try:
        location.exists()
    except OSError as err:
        raise LocationError(
            f"{location.uri} cannot be reached ({str(err).splitlines()[0]}); check the endpoint and the credentials"
        ) from err
    return location
