import enum
import sys

import pytest


class MouseButton(enum.IntEnum):
    LEFT = 1
    MIDDLE = 2
    RIGHT = 3


def test_pass():
    assert 1 + 1 == 2


def test_fail():
    assert [1, 2] == [1, 3], "lists differ - see diff"


def test_fail_plain():
    raise ValueError("boom")


@pytest.fixture
def broken():
    raise RuntimeError("fixture setup failed")


def test_error_in_fixture(broken):
    pass


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass


def test_skip_inside():
    pytest.skip("runtime skip")


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False


@pytest.mark.xfail(reason="fixed already")
def test_xpass():
    assert True


@pytest.mark.parametrize("value", [1, 2, 3])
def test_param(value):
    assert value != 3


@pytest.mark.parametrize("text", ["a b", "x - y", "plain"])
def test_param_text(text):
    assert text


@pytest.mark.parametrize("path", ["/tmp/some/dir/file.txt", "//server/share", "/glob/*.py", "relative/path"])
def test_param_path(path):
    assert path


@pytest.mark.parametrize("button", [MouseButton.LEFT, MouseButton.RIGHT])
def test_mouse(button):
    assert button in (1, 3)


def test_prints_noise(capsys):
    print("PASSED this line is output, not a result")
    print("FAILED neither is this")
    assert True


class TestGroup:
    def test_method_pass(self):
        assert True

    def test_method_fail(self):
        assert 0, "x - y - z"
