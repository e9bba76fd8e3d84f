"""Arguments that are valid Python but cannot become the JSON text a record holds: an int
over the interpreter's 4,300-digit conversion limit, a str with a lone surrogate (what
``os.fsdecode`` gives for a file name that is not UTF-8)."""

from __future__ import annotations

import pytest

from taskrouter import codec
from taskrouter.errors import PayloadError

HUGE = 10**5000
SURROGATE = "report-\udcff.pdf"


@pytest.mark.parametrize(
    "args, kwargs, named",
    [
        ((1, HUGE), {}, "argument 1"),
        (("ok",), {"name": SURROGATE}, "argument 'name'"),
        ((SURROGATE,), {}, "argument 0"),
        (([1, {"deep": HUGE}],), {}, "argument 0"),
        ((), {"items": (SURROGATE,)}, "argument 'items'"),
    ],
    ids=["huge-int", "surrogate-kwarg", "surrogate-fast-path", "nested-huge-int", "nested-str"],
)
def test_unstorable_arguments_raise_payload_error_naming_the_argument(args, kwargs, named):
    with pytest.raises(PayloadError) as caught:
        codec.encode_call(args, kwargs)
    assert str(caught.value).startswith(f"{named} cannot be stored as JSON text: ")
    assert isinstance(caught.value, TypeError)  # what callers of a task catch


def test_non_ascii_text_that_utf8_holds_still_encodes():
    payload = codec.encode_call(("café", "名前"), {"emoji": "🙂"})
    assert codec.decode_call(payload) == (("café", "名前"), {"emoji": "🙂"})
