from sympy import Symbol, sqrt
from sympy.utilities.pytest import XFAIL, raises, skip, slow
x = Symbol('x')


def test_pass():
    assert (x + x) == 2*x


def test_fail():
    assert sqrt(4) == 3


def test_error():
    raise ValueError("boom")


def test_skip():
    skip("not today")


@XFAIL
def test_xfail():
    assert sqrt(4) == 3


@XFAIL
def test_xpass():
    assert sqrt(4) == 2


@slow
def test_slow_one():
    assert True


def test_prints_noise():
    print("test_looks_like_a_result ok")
    assert True
