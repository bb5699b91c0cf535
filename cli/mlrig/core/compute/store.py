"""Where a remote retrain's caller and its task meet: a folder of the stack's storage.

`mlrig-remote/<project>/` holds, per run, `<retrain id>/` (the submitted commit's
bundle, then the task's result bundle and result.json) and, per task, `tasks/<task id>.json`
(the caller's record, so `--attach` works from any checkout of the repository). On a local
stack it is in the DVC remote's folder (mounted into the task's container at the same path);
on AWS, at the top of the DVC bucket (the task role and CI's may read and write that
prefix). Both sides name it by one URL, checked here: an absolute folder or
`s3://bucket/key-prefix`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from mlrig.errors import UsageError

if TYPE_CHECKING:
    from mlrig.contract import StackOutputs

ROOT = "mlrig-remote"
TEXT_LIMIT = 1024 * 1024  # a record or result.json is a few hundred bytes
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127})*$")


class Store(Protocol):
    url: str

    def child(self, name: str) -> Store: ...
    def put_file(self, name: str, src: Path) -> None: ...
    def put_text(self, name: str, text: str) -> None: ...
    def get_file(self, name: str, dest: Path) -> bool: ...
    def read_text(self, name: str) -> str | None: ...
    def names(self, under: str) -> list[str]: ...
    def remove(self, name: str) -> None: ...
    def remove_all(self) -> None: ...


def _name(name: str) -> str:
    """A name inside the store: relative, no '..', nothing but safe characters."""
    if not _NAME.fullmatch(name) or ".." in name.split("/"):
        raise UsageError(f"{name!r} is not a name mlrig keeps in a remote retrain's storage")
    return name


class FolderStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = str(path)

    def child(self, name: str) -> FolderStore:
        return FolderStore(self.path / _name(name))

    def put_file(self, name: str, src: Path) -> None:
        dest = self.path / _name(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)

    def put_text(self, name: str, text: str) -> None:
        dest = self.path / _name(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        with tmp.open("x") as fh:
            fh.write(text)
        os.replace(tmp, dest)

    def get_file(self, name: str, dest: Path) -> bool:
        source = self.path / _name(name)
        if not source.is_file():
            return False
        shutil.copyfile(source, dest)
        return True

    def read_text(self, name: str) -> str | None:
        source = self.path / _name(name)
        try:
            with source.open("rb") as fh:
                data = fh.read(TEXT_LIMIT + 1)
        except FileNotFoundError:
            return None
        if len(data) > TEXT_LIMIT:
            raise UsageError(f"{source} is larger than a record mlrig writes")
        return data.decode(errors="replace")

    def names(self, under: str) -> list[str]:
        folder = self.path / _name(under)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_file())

    def remove(self, name: str) -> None:
        (self.path / _name(name)).unlink(missing_ok=True)

    def remove_all(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class S3Store:
    def __init__(
        self, bucket: str, prefix: str, *, region: str | None, endpoint_url: str | None = None
    ) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.region, self.endpoint_url = region, endpoint_url
        self.url = f"s3://{bucket}/{self.prefix}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{_name(name)}"

    def _where(self) -> dict[str, str | None]:
        return {"region": self.region, "endpoint_url": self.endpoint_url}

    def child(self, name: str) -> S3Store:
        return S3Store(self.bucket, self._key(name), **self._where())

    def put_file(self, name: str, src: Path) -> None:
        from mlrig.adapters import aws

        aws.s3_put_file(self.bucket, self._key(name), str(src), **self._where())

    def put_text(self, name: str, text: str) -> None:
        from mlrig.adapters import aws

        aws.s3_put_bytes(self.bucket, self._key(name), text.encode(), **self._where())

    def get_file(self, name: str, dest: Path) -> bool:
        from mlrig.adapters import aws

        return aws.s3_get_file(self.bucket, self._key(name), str(dest), **self._where())

    def read_text(self, name: str) -> str | None:
        from mlrig.adapters import aws

        data = aws.s3_get_bytes(self.bucket, self._key(name), limit=TEXT_LIMIT, **self._where())
        if data is not None and len(data) > TEXT_LIMIT:
            raise UsageError(f"s3://{self.bucket}/{self._key(name)} is larger than a record")
        return None if data is None else data.decode(errors="replace")

    def names(self, under: str) -> list[str]:
        from mlrig.adapters import aws

        prefix = self._key(under) + "/"
        found = [k[len(prefix) :] for k in aws.s3_keys(self.bucket, prefix, **self._where())]
        return sorted(n for n in found if n and "/" not in n)

    def remove(self, name: str) -> None:
        from mlrig.adapters import aws

        aws.s3_delete_prefix(self.bucket, self._key(name), **self._where())

    def remove_all(self) -> None:
        from mlrig.adapters import aws

        aws.s3_delete_prefix(self.bucket, self.prefix + "/", **self._where())


def open_store(url: str, *, region: str | None = None, endpoint_url: str | None = None) -> Store:
    """The store a URL names (an earlier process's or the caller's: input, checked)."""
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        parts = PurePosixPath(prefix).parts
        if not _BUCKET.fullmatch(bucket) or not prefix or ".." in parts or "\n" in prefix:
            raise UsageError(f"{url!r} is not an S3 folder mlrig keeps remote retrains in")
        _name(prefix.strip("/"))
        return S3Store(bucket, prefix, region=region, endpoint_url=endpoint_url)
    path = Path(url)
    if "://" in url or not path.is_absolute() or ".." in path.parts:
        raise UsageError(f"{url!r} is not a folder mlrig keeps remote retrains in")
    return FolderStore(path)


def project_store(outputs: StackOutputs, project: str) -> Store:
    """A stack's `mlrig-remote/<project>`: in the DVC remote's folder (local), at the DVC
    bucket's top (AWS: the prefix the task and CI roles may write, `REMOTE_RESULTS_PREFIX`)."""
    remote = outputs.dvc_remote
    base = remote.url.rstrip("/")
    if base.startswith("s3://"):
        base = "s3://" + base.removeprefix("s3://").split("/", 1)[0]
    return open_store(
        f"{base}/{ROOT}/{_name(project)}",
        region=remote.region or outputs.region,
        endpoint_url=remote.endpoint_url,
    )
