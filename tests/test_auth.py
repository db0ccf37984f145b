"""The credential check on its own: exact matches only, several values for rotation."""

from __future__ import annotations

from multidict import CIMultiDict, MultiDict

from bridge.receiving.auth import Authenticator


def check(auth: Authenticator, query: dict[str, str], headers: dict[str, str]) -> bool:
    return auth.check(MultiDict(query), CIMultiDict(headers))


def test_any_of_several_keys_in_any_case_of_the_parameter_name() -> None:
    auth = Authenticator(["old", "new"], [], False)
    assert check(auth, {"APIKEY": "old"}, {})
    assert check(auth, {"apikey": "new"}, {})
    assert check(auth, {"ApiKey": "new"}, {})
    assert not check(auth, {"APIKEY": "NEW"}, {})
    assert not check(auth, {"APIKEY": ""}, {})


def test_a_wrong_key_next_to_a_right_one_still_passes_only_on_the_right_one() -> None:
    auth = Authenticator(["k"], [], False)
    assert check(auth, {"x": "1", "APIKEY": "k"}, {})
    assert not check(auth, {"x": "k"}, {})


def test_header_must_equal_a_configured_value_exactly() -> None:
    auth = Authenticator([], ["Basic abc=", "Bearer t"], False)
    assert check(auth, {}, {"Authorization": "Basic abc="})
    assert check(auth, {}, {"authorization": "Bearer t"})
    assert not check(auth, {}, {"Authorization": "basic abc="})
    assert not check(auth, {"APIKEY": "Basic abc="}, {})


def test_non_ascii_values_are_refused_not_crashed() -> None:
    auth = Authenticator(["k"], ["Basic x"], False)
    assert not check(auth, {"APIKEY": "ké\udcff"}, {"Authorization": "Bäsic"})


def test_open_only_when_explicitly_allowed_and_nothing_configured() -> None:
    assert check(Authenticator([], [], True), {}, {})
    assert not check(Authenticator([], [], False), {}, {})
    assert not check(Authenticator(["k"], [], True), {}, {})
