import pytest

from nas.errors import UserInputError
from nas.registry import Registry


def test_register_names_and_lookup():
    things = Registry("widget", name_attribute="name")

    @things.register("round")
    class Round:
        pass

    assert Round.name == "round"
    assert things.names() == ["round"] and things.lookup("round") is Round


def test_unknown_name_suggests_and_lists():
    things = Registry("widget")
    things.register("evolution")(object)
    things.register("random")(object)
    with pytest.raises(UserInputError, match=r"unknown widget 'evolutoin'. Did you mean: evolution\? "
                                             r"Available: evolution, random"):
        things.lookup("evolutoin")
