"""A Python package index's simple API, read as pip reads it: which index pip is configured
to use, and the files (name and hashes) that index lists for one project.

PEP 691 (JSON) is asked for first; an index that answers HTML is read as PEP 503 (each file
an anchor, its hash in the link's `#sha256=` fragment). What comes back is the index's word,
unchecked: core/bootstrap/_pin.py validates it. An index URL may carry credentials
(https://user:token@host/simple), so no message names more of it than its host.
"""

from __future__ import annotations

import configparser
import os
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from mlrig.errors import ServiceError

PYPI_SIMPLE = "https://pypi.org/simple/"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"


def _config_files() -> list[Path]:
    """pip's configuration files, lowest priority first (pip's documented order: global,
    user, site); PIP_CONFIG_FILE is read last, and os.devnull there means none at all."""
    chosen = os.environ.get("PIP_CONFIG_FILE")
    if chosen == os.devnull:
        return []
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d, "pip", "pip.conf") for d in xdg_dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    xdg_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    files += [Path.home() / ".pip" / "pip.conf", Path(xdg_home, "pip", "pip.conf")]
    files.append(Path(sys.prefix, "pip.conf"))
    if chosen:
        files.append(Path(chosen))
    return files


def index_url() -> str:
    """The index pip installs from here: PIP_INDEX_URL, else `index-url` in pip's
    configuration ([install] over [global], later files over earlier), else PyPI."""
    from_env = os.environ.get("PIP_INDEX_URL", "").strip()
    if from_env:
        return from_env
    found = ""
    for file in _config_files():
        parser = configparser.RawConfigParser()
        try:
            parser.read(file, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # pip would refuse it too; the default index is the honest fallback
        for section in ("global", "install"):
            if parser.has_option(section, "index-url"):
                found = parser.get(section, "index-url").strip()
    return found or PYPI_SIMPLE


def host_of(url: str) -> str:
    """The part of an index URL that a message may name (no user, password or path)."""
    try:
        return urlsplit(url).hostname or "the index"
    except ValueError:
        return "the index"


class _Anchors(HTMLParser):
    """PEP 503: each <a href=URL#sha256=HEX>FILENAME</a> of a project page."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[dict[str, Any]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            _url, fragment = urldefrag(self._href)
            name, _, value = fragment.partition("=")
            hashes = {name: value} if value else {}
            self.files.append({"filename": "".join(self._text).strip(), "hashes": hashes})
            self._href = None


def project_files(
    index: str, project: str, *, timeout: float = 10.0
) -> list[dict[str, Any]] | None:
    """The files the index lists for project, each {"filename": ..., "hashes": {...}} as the
    index gave them (unchecked); None when the index has no such project (404). An index
    that cannot be asked (not http(s), no answer, another status, a body that is neither
    JSON nor HTML) is a ServiceError naming only its host."""
    import requests

    scheme = urlsplit(index).scheme
    host = host_of(index)
    if scheme not in ("http", "https"):
        raise ServiceError(f"the configured index is not an http(s) URL ({scheme or 'a path'})")
    url = urljoin(index.rstrip("/") + "/", f"{project}/")
    try:
        resp = requests.get(url, headers={"Accept": _ACCEPT}, timeout=timeout)
    except requests.RequestException as exc:
        raise ServiceError(f"the index at {host} did not answer ({type(exc).__name__})") from None
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise ServiceError(f"the index at {host} answered HTTP {resp.status_code}")
    content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type == JSON_TYPE:
        try:
            data = resp.json()
        except ValueError:
            raise ServiceError(f"the index at {host} sent JSON it cannot parse") from None
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list):
            raise ServiceError(f"the index at {host} sent a page with no list of files")
        return files
    if content_type in ("text/html", "application/vnd.pypi.simple.v1+html"):
        parser = _Anchors()
        parser.feed(resp.text)
        return parser.files
    raise ServiceError(f"the index at {host} answered {content_type or 'no content type'}")
