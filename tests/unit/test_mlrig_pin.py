"""Issue 34 (4): the sha256 of the pinned mlrig's files, read from the configured package index
(PEP 691 JSON, PEP 503 HTML) at init/update and validated before they reach the answers file and
the generated workflow. The index is a real HTTP server on loopback (tests.helpers.local_index)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlrig.adapters import package_index
from mlrig.core.bootstrap import _pin as bootstrap_pin
from mlrig.core.shared.names import check_template_answers
from mlrig.errors import UsageError
from tests.helpers import local_index

VERSION = "9.8.7"
WHEEL = f"mlrig-{VERSION}-py3-none-any.whl"
SDIST = f"mlrig-{VERSION}.tar.gz"
FILES = {
    WHEEL: b"a wheel",
    SDIST: b"an sdist",
    "mlrig-9.8.6-py3-none-any.whl": b"an older wheel",
    "mlrig-9.8.70-py3-none-any.whl": b"a version that starts the same",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def no_pip_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)


@pytest.mark.parametrize("html_only", [False, True], ids=["pep691-json", "pep503-html"])
def test_the_pinned_versions_files_sha256_come_from_the_index(
    monkeypatch: pytest.MonkeyPatch, html_only: bool
) -> None:
    with local_index(FILES, html_only=html_only) as url:
        monkeypatch.setenv("PIP_INDEX_URL", url)
        pin = bootstrap_pin.pin(VERSION)
    assert pin.sha256 == tuple(sorted([_sha(FILES[WHEEL]), _sha(FILES[SDIST])]))
    assert pin.why_none == "" and pin.answer == " ".join(pin.sha256)
    checked = check_template_answers({"project_name": "churn", "mlrig_sha256": pin.answer}, ())
    assert checked["mlrig_sha256"] == pin.answer  # a valid answer


@pytest.mark.parametrize(
    ("listed", "says"),
    [
        ({WHEEL: {}}, f"no sha256 for {WHEEL}"),
        ({WHEEL: {"md5": "0" * 32}}, f"no sha256 for {WHEEL}"),
        ({WHEEL: {"sha256": "Z" * 64}}, f"{WHEEL} a sha256 that is not one"),
        ({WHEEL: {"sha256": "a" * 64 + "\n --index-url http://evil"}}, "not one"),
    ],
    ids=["none", "md5-only", "not-hex", "injection"],
)
def test_an_index_answer_without_a_usable_sha256_records_none_and_says_why(
    monkeypatch: pytest.MonkeyPatch, listed: dict[str, dict[str, str]], says: str
) -> None:
    with local_index(FILES, listed=listed) as url:
        monkeypatch.setenv("PIP_INDEX_URL", url)
        pin = bootstrap_pin.pin(VERSION)
    assert pin.sha256 == () and pin.answer == ""
    assert pin.why_none.startswith("the index at 127.0.0.1 gives ") and says in pin.why_none
    assert "evil" not in pin.why_none


def test_a_listing_of_another_shape_or_version_gives_no_hashes() -> None:
    host = "127.0.0.1"
    assert (
        "in a form it cannot read"
        in bootstrap_pin.hashes_from({"files": 1}, VERSION, host).why_none
    )
    bad_name = [{"filename": 7, "hashes": {"sha256": "a" * 64}}]
    assert "in a form it cannot read" in bootstrap_pin.hashes_from(bad_name, VERSION, host).why_none
    others = [
        {"filename": "mlrig-9.8.70.tar.gz", "hashes": {"sha256": "a" * 64}},
        {"filename": f"../mlrig-{VERSION}.tar.gz", "hashes": {"sha256": "b" * 64}},
        {"filename": f"evil-{VERSION}-py3-none-any.whl", "hashes": {"sha256": "c" * 64}},
        {"filename": f"mlrig-{VERSION}-py3-none-any.whl.asc", "hashes": {"sha256": "d" * 64}},
    ]
    pin = bootstrap_pin.hashes_from(others, VERSION, host)
    assert (
        pin.sha256 == () and pin.why_none == f"the index at {host} has no file of mlrig=={VERSION}"
    )


def test_an_index_without_mlrig_or_that_does_not_answer_records_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with local_index({"other-1.0.tar.gz": b"x"}) as url:
        monkeypatch.setenv("PIP_INDEX_URL", url)
        assert bootstrap_pin.pin(VERSION).why_none == "the index at 127.0.0.1 has no project mlrig"
    # gone: the port no longer answers; the URL's credentials are never repeated
    monkeypatch.setenv("PIP_INDEX_URL", url.replace("http://", "http://user:s3cret@"))
    pin = bootstrap_pin.pin(VERSION)
    assert pin.sha256 == ()
    assert pin.why_none.startswith("the index at 127.0.0.1 did not answer (")
    assert "s3cret" not in pin.why_none and "user" not in pin.why_none
    monkeypatch.setenv("PIP_INDEX_URL", "file:///opt/simple")
    assert (
        bootstrap_pin.pin(VERSION).why_none == "the configured index is not an http(s) URL (file)"
    )


def test_a_development_version_asks_no_index_and_a_kept_pin_keeps_its_hashes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the index was asked")

    monkeypatch.setattr(package_index, "project_files", refuse)
    dev = bootstrap_pin.pin("0.3.1.dev4+g1234abc")
    assert dev.sha256 == () and "development version" in dev.why_none
    kept = bootstrap_pin.pin(VERSION, recorded="a" * 64 + " " + "b" * 64, recorded_version=VERSION)
    assert kept.sha256 == ("a" * 64, "b" * 64)


def test_the_index_is_pips_configured_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert package_index.index_url() == package_index.PYPI_SIMPLE
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://global.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "none"))
    assert package_index.index_url() == "https://global.example/simple"
    conf.write_text(conf.read_text() + "[install]\nindex-url = https://install.example/simple\n")
    assert package_index.index_url() == "https://install.example/simple"
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    assert package_index.index_url() == "https://env.example/simple"


def test_a_recorded_hash_answer_is_checked_like_every_answer() -> None:
    ok = "a" * 64 + " " + "b" * 64
    assert (
        check_template_answers({"project_name": "churn", "mlrig_sha256": ok}, ())["mlrig_sha256"]
        == ok
    )
    for bad in ("a" * 63, "A" * 64, "a" * 64 + "  " + "b" * 64, "a" * 64 + '" ; curl evil'):
        with pytest.raises(UsageError) as err:
            check_template_answers({"project_name": "churn", "mlrig_sha256": bad}, ())
        assert "mlrig_sha256" in err.value.message


def test_init_and_update_say_how_ci_installs_the_pin(capsys: pytest.CaptureFixture[str]) -> None:
    from mlrig.commands.init import _say_pin

    _say_pin(bootstrap_pin.Pin(VERSION, ("a" * 64, "b" * 64)))
    out, err = capsys.readouterr()
    assert out.strip() == (
        f"CI installs mlrig=={VERSION} with --require-hashes (the sha256 of its 2 file(s) on "
        "the package index, in .copier-answers.yml)"
    )
    assert err == ""
    _say_pin(bootstrap_pin.Pin(VERSION, (), "the index at 127.0.0.1 has no project mlrig [x]"))
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == (
        f"warning: CI installs mlrig=={VERSION} without a hash check: the index at 127.0.0.1 "
        "has no project mlrig [x]"
    )
    _say_pin(bootstrap_pin.Pin("1.0.1.dev2+gabc", (), "a development version"))
    assert capsys.readouterr() == ("", "")  # update says how CI gets a development version
