import signal
import socket
import threading
import time

import pytest

from workers.problems.verifiers import VERIFIERS, first_number, get_verifier, last_boxed

HALF = r"so the answer is \boxed{\frac{1}{2}}."


def test_the_registry_holds_exact_numeric_and_boxed():
    assert sorted(VERIFIERS) == ["boxed", "exact", "numeric"]


def test_an_unknown_verifier_lists_the_valid_names():
    with pytest.raises(ValueError, match="'regex'.*boxed, exact, numeric"):
        get_verifier("regex")


def test_an_unknown_option_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match="'tol'.*abs_tol, rel_tol"):
        get_verifier("numeric", tol=0.1)
    with pytest.raises(ValueError, match="'strict'.*none"):
        get_verifier("exact", strict=True)


@pytest.mark.parametrize(
    ("name", "options", "named"),
    [
        ("numeric", {"rel_tol": -1}, "rel_tol"),
        ("numeric", {"abs_tol": "0.1"}, "abs_tol"),
        ("boxed", {"timeout_s": 0}, "timeout_s"),
        ("boxed", {"max_chars": 0}, "max_chars"),
    ],
)
def test_a_bad_option_value_is_named(name, options, named):
    with pytest.raises(ValueError, match=named):
        get_verifier(name, **options)


def test_exact_ignores_surrounding_whitespace_only():
    verify = get_verifier("exact")
    assert verify("  234\n", "234") == 1.0
    assert verify("2 34", "234") == 0.0
    assert verify("2345", "234") == 0.0


def test_numeric_reads_the_first_number_of_the_response():
    verify = get_verifier("numeric")
    assert verify("The total is 1,234.5 apples, not 7", "1234.5") == 1.0
    assert verify("about -0.5", "-.5") == 1.0
    assert verify("7 then 1234.5", "1234.5") == 0.0
    assert verify("no idea", "3") == 0.0
    assert first_number("x = 2e3 m") == 2000.0


def test_numeric_tolerances_come_from_the_options():
    assert get_verifier("numeric")("3.1416", "3.14159") == 0.0
    assert get_verifier("numeric", rel_tol=1e-4)("3.1416", "3.14159") == 1.0
    assert get_verifier("numeric")("1e-10", "0") == 1.0  # within the default abs_tol
    assert get_verifier("numeric", abs_tol=0)("1e-10", "0") == 0.0


def test_numeric_refuses_a_ground_truth_that_is_not_a_number():
    with pytest.raises(ValueError, match="'seven'"):
        get_verifier("numeric")("7", "seven")


def test_last_boxed_takes_the_last_balanced_box():
    assert last_boxed(r"\boxed{1} then \boxed{\frac{a}{b}}") == r"\frac{a}{b}"
    assert last_boxed(r"\boxed{2} and \boxed{unclosed") == "2"
    assert last_boxed("no box") is None


def test_boxed_accepts_equivalent_forms_through_math_verify():
    verify = get_verifier("boxed")
    assert verify(HALF, "0.5") == 1.0
    assert verify(r"\boxed{x^2 + 1}", "1+x^2") == 1.0
    assert verify(r"\boxed{3}", r"\boxed{3}") == 1.0
    assert verify(r"\boxed{0.5} no wait \boxed{0.4}", "0.5") == 0.0
    assert verify("0.5 without a box", "0.5") == 0.0
    assert verify(r"\boxed{}", "0.5") == 0.0


def test_boxed_falls_back_to_a_normalised_string_compare():
    # max_chars below the answer length keeps math-verify out of it.
    verify = get_verifier("boxed", max_chars=2)
    assert verify(r"\boxed{ Blue Whale }", "blue whale") == 1.0
    assert verify(r"\boxed{1/2}", "0.5") == 0.0


@pytest.mark.parametrize("timeout_s", [None, 5.0])
def test_boxed_works_outside_the_main_thread(timeout_s):
    verify = get_verifier("boxed", timeout_s=timeout_s)
    results, failures = [], []

    def call():
        try:
            results.append(verify(HALF, "0.5"))
        except Exception as e:  # noqa: BLE001 - the test reports it below
            failures.append(e)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert results == [1.0] * 4  # 1/2 == 0.5 only if math-verify really ran


def test_boxed_leaves_other_alarm_timers_alone():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        for timeout_s in (None, 5.0):
            assert get_verifier("boxed", timeout_s=timeout_s)(HALF, "0.5") == 1.0
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # math-verify's alarm(0) would zero it
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_boxed_in_process_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert get_verifier("boxed", timeout_s=None)(HALF, "0.5") == 1.0


def test_an_answer_that_never_finishes_scores_zero_after_the_timeout():
    verify = get_verifier("boxed", timeout_s=1.0)
    assert verify(HALF, "0.5") == 1.0  # starts the helper outside the timed part
    began = time.monotonic()
    assert verify(r"\boxed{2^{2^{2^{100}}}}", "4") == 0.0  # sympy would run for ages
    assert time.monotonic() - began < 10
    assert verify(HALF, "0.5") == 1.0  # a fresh helper takes over
