"""Object storage behind one small async interface: ``gs://``, ``s3://`` and ``file://`` buckets.

The storage indexer reads a bucket and ``eprd publish`` writes one; both only need to
get, put and list objects, and to know an object's MD5 (so that re-publishing unchanged
content uploads nothing). Each scheme is served by a well-kept asyncio library, imported
only when a URL of that scheme is used:

* ``gs://BUCKET[/PREFIX]``: gcloud-aio-storage (aiohttp). It honours
  ``STORAGE_EMULATOR_HOST`` as the reference's Go client does, and otherwise uses
  Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server).
* ``s3://BUCKET[/PREFIX]``: aiobotocore (botocore on aiohttp), with the standard AWS
  configuration chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, roles,
  ``AWS_REGION``/``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` for any S3-compatible server.
* ``file:///FOLDER``: a local folder laid out as the bucket (writes are atomic renames).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import tempfile
from typing import Any, Protocol
from urllib.parse import urlsplit


class StorageError(Exception):
    """An object store that cannot be read or written (network, permissions, bad answers)."""


class ObjectNotFound(StorageError):
    """The object does not exist."""


class ObjectStore(Protocol):
    """A bucket (or a prefix of one); keys are relative to it, with ``/`` separators."""

    url: str

    async def get(self, key: str) -> bytes:
        """The object's content; raises ObjectNotFound or StorageError."""
        ...

    async def put(self, key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        """Write the object whole."""
        ...

    async def md5(self, key: str) -> str | None:
        """The hex MD5 of the object's content, None if it does not exist."""
        ...

    async def folders(self, prefix: str) -> list[str]:
        """The names of the "folders" directly below ``prefix`` (which ends in ``/``)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket, prefix without slashes) of a storage URL; raises ValueError if unusable."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "file":
        path = parts.path
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ValueError(f"file:// storage URL needs an absolute path: {url}")
        return scheme, "", path.rstrip("/") or "/"
    if scheme not in ("gs", "s3"):
        raise ValueError(f"unsupported storage URL (want gs://, s3:// or file://): {url}")
    if not parts.netloc:
        raise ValueError(f"storage URL has no bucket: {url}")
    return scheme, parts.netloc, parts.path.strip("/")


def open_store(url: str, public_read: bool = False) -> ObjectStore:
    """The object store a ``gs://``, ``s3://`` or ``file://`` URL names.

    ``public_read`` gives every object written a public-read ACL (S3 ``public-read``, GCS
    ``publicRead``), for buckets whose policy does not already make them readable.
    """
    scheme, bucket, prefix = split_url(url)
    if scheme == "file":
        return FileStore(url, prefix)
    if scheme == "gs":
        return GcsStore(url, bucket, prefix, public_read)
    return S3Store(url, bucket, prefix, public_read)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key


# --- file:// ---------------------------------------------------------------------------------


class FileStore:
    """A local folder in the bucket layout."""

    def __init__(self, url: str, root: str) -> None:
        self.url = url
        self.root = root

    def _path(self, key: str) -> str:
        path = os.path.normpath(os.path.join(self.root, key))
        if path != self.root and not path.startswith(self.root.rstrip("/") + "/"):
            raise StorageError(f"object key outside the bucket: {key}")
        return path

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._read, key)

    def _read(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                return fh.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as err:
            raise StorageError(f"cannot read {key}: {err.strerror}") from None

    async def put(self, key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        await asyncio.to_thread(self._write, key, data)

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".eprd-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)  # readers see the old object or the new one, never half of one
        except OSError as err:
            raise StorageError(f"cannot write {key}: {err.strerror}") from None

    async def md5(self, key: str) -> str | None:
        try:
            data = await self.get(key)
        except ObjectNotFound:
            return None
        return hashlib.md5(data).hexdigest()

    async def folders(self, prefix: str) -> list[str]:
        def scan() -> list[str]:
            try:
                with os.scandir(self._path(prefix)) as entries:
                    return [e.name for e in entries if e.is_dir() and not e.name.startswith(".eprd-")]
            except FileNotFoundError:
                return []
            except OSError as err:
                raise StorageError(f"cannot list {prefix}: {err.strerror}") from None

        return await asyncio.to_thread(scan)

    async def close(self) -> None:
        return None


# --- gs:// -----------------------------------------------------------------------------------


class GcsStore:
    """A Google Cloud Storage bucket through gcloud-aio-storage."""

    def __init__(self, url: str, bucket: str, prefix: str, public_read: bool = False) -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = prefix
        self.public_read = public_read
        self._client: Any = None
        self._session: Any = None

    def _storage(self) -> Any:
        if self._client is None:
            import aiohttp
            from gcloud.aio.storage import Storage

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120, sock_connect=10))
            self._client = Storage(session=self._session)
        return self._client

    async def get(self, key: str) -> bytes:
        import aiohttp

        try:
            return await self._storage().download(self.bucket, _join(self.prefix, key))
        except aiohttp.ClientResponseError as err:
            if err.status == 404:
                raise ObjectNotFound(key) from None
            raise StorageError(f"gs://{self.bucket}/{_join(self.prefix, key)}: HTTP {err.status}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise StorageError(
                f"gs://{self.bucket}/{_join(self.prefix, key)}: {err or type(err).__name__}"
            ) from None

    async def put(self, key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        import aiohttp

        # Object metadata makes the upload a multipart one (simple uploads of JSON crash some
        # emulators), and carries the Cache-Control public readers of the bucket get.
        metadata = {"cacheControl": cache_control or "public, max-age=3600"}
        try:
            await self._storage().upload(
                self.bucket,
                _join(self.prefix, key),
                data,
                content_type=content_type,
                metadata=metadata,
                parameters={"predefinedAcl": "publicRead"} if self.public_read else None,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise StorageError(f"cannot upload gs://{self.bucket}/{_join(self.prefix, key)}: {err}") from None

    async def md5(self, key: str) -> str | None:
        import aiohttp

        try:
            meta = await self._storage().download_metadata(self.bucket, _join(self.prefix, key))
        except aiohttp.ClientResponseError as err:
            if err.status == 404:
                return None
            raise StorageError(f"gs://{self.bucket}/{_join(self.prefix, key)}: HTTP {err.status}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise StorageError(f"gs://{self.bucket}/{_join(self.prefix, key)}: {err}") from None
        digest = meta.get("md5Hash")
        return base64.b64decode(digest).hex() if digest else ""

    async def folders(self, prefix: str) -> list[str]:
        import aiohttp

        full = _join(self.prefix, prefix)
        names: list[str] = []
        params: dict[str, str] = {"prefix": full, "delimiter": "/"}
        try:
            while True:
                page = await self._storage().list_objects(self.bucket, params=params)
                names.extend(p[len(full) :].rstrip("/") for p in page.get("prefixes", ()))
                token = page.get("nextPageToken")
                if not token:
                    return names
                params = {**params, "pageToken": token}
        except aiohttp.ClientResponseError as err:
            raise StorageError(f"cannot list gs://{self.bucket}/{full}: HTTP {err.status}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise StorageError(f"cannot list gs://{self.bucket}/{full}: {err}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._client = self._session = None


# --- s3:// -----------------------------------------------------------------------------------


class S3Store:
    """An S3 (or S3-compatible) bucket through aiobotocore."""

    def __init__(self, url: str, bucket: str, prefix: str, public_read: bool = False) -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = prefix
        self.public_read = public_read
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session

                stack = contextlib.AsyncExitStack()
                config = AioConfig(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3})
                self._client = await stack.enter_async_context(
                    get_session().create_client("s3", config=config)
                )
                self._stack = stack
            return self._client

    def _error(self, key: str, err: Exception) -> StorageError:
        code = getattr(err, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFound(key)
        return StorageError(f"s3://{self.bucket}/{_join(self.prefix, key)}: {code or err}")

    async def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            s3 = await self._s3()
            response = await s3.get_object(Bucket=self.bucket, Key=_join(self.prefix, key))
            async with response["Body"] as body:
                return await body.read()
        except (ClientError, BotoCoreError, OSError, TimeoutError) as err:
            raise self._error(key, err) from None

    async def put(self, key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            s3 = await self._s3()
            await s3.put_object(
                Bucket=self.bucket,
                Key=_join(self.prefix, key),
                Body=data,
                ContentType=content_type,
                CacheControl=cache_control or "public, max-age=3600",
                **({"ACL": "public-read"} if self.public_read else {}),
            )
        except (ClientError, BotoCoreError, OSError, TimeoutError) as err:
            raise self._error(key, err) from None

    async def md5(self, key: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            s3 = await self._s3()
            head = await s3.head_object(Bucket=self.bucket, Key=_join(self.prefix, key))
        except (ClientError, BotoCoreError, OSError, TimeoutError) as err:
            error = self._error(key, err)
            if isinstance(error, ObjectNotFound):
                return None
            raise error from None
        # A single-part upload's ETag is its MD5 (publish never uploads in parts).
        return head.get("ETag", "").strip('"')

    async def folders(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = _join(self.prefix, prefix)
        names: list[str] = []
        try:
            s3 = await self._s3()
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
                names.extend(p["Prefix"][len(full) :].rstrip("/") for p in page.get("CommonPrefixes", ()))
        except (ClientError, BotoCoreError, OSError, TimeoutError) as err:
            raise self._error(prefix, err) from None
        return names

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = self._client = None
