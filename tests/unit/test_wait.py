"""`mlrig.wait.wait_until`: first truthy answer, which errors mean "not yet", and how it ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mlrig.wait import Abandoned, WaitTimeout, wait_until


def answers(*values: object) -> Callable[[], object]:
    """A check that returns (or raises) each value in turn, then keeps repeating the last."""
    it: Iterator[object] = iter(values)
    last: list[object] = [None]

    def check() -> object:
        value = next(it, last[0])
        last[0] = value
        if isinstance(value, BaseException):
            raise value
        return value

    return check


def test_returns_the_first_truthy_value() -> None:
    check = answers(None, 0, "", {"port": 5000}, "later")
    assert wait_until(check, timeout=5, interval=0) == {"port": 5000}


def test_retries_the_named_errors_until_an_answer() -> None:
    check = answers(ConnectionRefusedError("refused"), TimeoutError("slow"), 42)
    assert wait_until(check, timeout=5, interval=0, retry_on=(OSError,)) == 42


def test_other_errors_propagate_at_once() -> None:
    calls: list[int] = []

    def check() -> bool:
        calls.append(1)
        raise KeyError("not a retryable error")

    with pytest.raises(KeyError, match="not a retryable error"):
        wait_until(check, timeout=5, interval=0, retry_on=(OSError,))
    assert len(calls) == 1


def test_an_error_outside_a_custom_retry_on_propagates() -> None:
    check = answers(ValueError("half-written JSON"), ConnectionRefusedError("refused"))
    with pytest.raises(ConnectionRefusedError):
        wait_until(check, timeout=5, interval=0, retry_on=(ValueError,))


def test_time_out_names_what_and_the_last_error() -> None:
    check = answers(ConnectionRefusedError("first"), ConnectionResetError("connection reset"))
    with pytest.raises(WaitTimeout) as info:
        wait_until(check, timeout=0.05, interval=0.01, what="the registry answering")
    err = info.value
    assert err.what == "the registry answering"
    assert isinstance(err.last_error, ConnectionResetError)
    assert "the registry answering" in str(err)
    assert "ConnectionResetError: connection reset" in str(err)
    assert isinstance(err, TimeoutError)


def test_time_out_without_any_error_says_no_last_error() -> None:
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: False, timeout=0.05, interval=0.01, what="nothing")
    assert info.value.last_error is None
    assert "last error" not in str(info.value)


def test_the_time_out_is_honoured_even_with_a_long_interval() -> None:
    with pytest.raises(WaitTimeout):
        wait_until(lambda: None, timeout=0.05, interval=60)


def test_give_up_raises_abandoned_at_once() -> None:
    checked: list[int] = []

    def check() -> bool:
        checked.append(1)
        return False

    with pytest.raises(Abandoned, match="mlflow exited with code 1"):
        wait_until(check, timeout=30, interval=0, give_up=lambda: "mlflow exited with code 1")
    assert checked == []


def test_give_up_is_asked_before_every_try() -> None:
    reasons = iter([None, "", "the process died"])
    checked: list[int] = []

    def check() -> bool:
        checked.append(1)
        return False

    with pytest.raises(Abandoned, match="the process died"):
        wait_until(check, timeout=30, interval=0, give_up=lambda: next(reasons))
    assert len(checked) == 2
