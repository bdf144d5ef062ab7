"""The result-feed entries that come in wake-ups (``FeedFromWakeups``): taken in place of a read only when they
chain from the cursor; any loss, reordering or bare wake-up leads to a read, and nothing is taken twice or skipped."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_core.backends.contracts import Finished
from mesh_core.backends.feed import FEED_ENTRIES_KEPT, FeedFromWakeups
from mesh_core.model import TaskStatus


def _entry(seq: int) -> Finished:
    return Finished(f"t{seq}", TaskStatus.SUCCEEDED, 1, "w", "w", 1.0, seq)


def _places(seqs: list[int]) -> list[tuple[int, int, Finished]]:
    """A submitter's feed entries at ``seqs`` (others' entries between them), each with the one before it."""
    return [(prev, seq, _entry(seq)) for prev, seq in zip([0, *seqs], seqs, strict=False)]


def test_entries_that_chain_from_the_cursor_stand_for_a_read() -> None:
    feed = FeedFromWakeups()
    feed.news = False  # the feed was read once (at open)
    mine = _places([12, 15, 40])
    feed.arrived(mine[1:2])
    feed.arrived(mine[:1])
    assert feed.take(10) == ([mine[0][2], mine[1][2]], 15, True)  # in feed order, whatever order they came in
    assert feed.take(15) == ([], 15, True)  # nothing came: nothing known to be missing either
    feed.arrived(mine[2:])
    assert feed.take(15) == ([mine[2][2]], 40, True)
    assert feed.taken == 3


def test_a_gap_or_a_bare_wakeup_asks_for_a_read_and_what_is_read_is_not_taken_again() -> None:
    feed = FeedFromWakeups()
    feed.news = False
    mine = _places([5, 9, 13])
    feed.arrived([mine[0], mine[2]])  # 9's wake-up was lost
    assert feed.take(0) == ([mine[0][2]], 5, False)  # a read from 5 must follow
    feed.read_through(13)  # it brought 9 and 13
    assert feed.take(13) == ([], 13, True)  # 13 came too: not again
    feed.news = True  # a bare wake-up: an entry made elsewhere (a retry given up)
    feed.arrived(_places([13, 20])[1:])
    assert feed.take(13) == ([_entry(20)], 20, False)


def test_entries_are_held_up_to_a_bound() -> None:
    feed = FeedFromWakeups()
    feed.arrived(_places(list(range(1, FEED_ENTRIES_KEPT + 6))))
    assert feed.left == 5
    feed.arrived([(3, 2, _entry(2)), (-1, 4, _entry(4))])  # a place that cannot be is ignored
    assert feed.left == 7


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_whatever_comes_or_is_lost_every_entry_reaches_the_reader_once_in_order(data: st.DataObject) -> None:
    gaps = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=30))
    seqs = [sum(gaps[:i + 1]) for i in range(len(gaps))]  # this submitter's entries; others' between them
    mine = _places(seqs)
    feed = FeedFromWakeups()
    stored: list[tuple[int, int, Finished]] = []  # what the file holds so far
    got: list[Finished] = []
    cursor = 0
    for place in mine:
        stored.append(place)
        if data.draw(st.booleans()):  # the wake-up came (else it was lost, or the entry was made elsewhere)
            feed.arrived([place])
        else:
            feed.news = feed.news or data.draw(st.booleans())
        if data.draw(st.booleans()):  # the reader looks now (a wake-up, a poll)
            came, cursor, whole = feed.take(cursor)
            got += came
            if not (whole and came):  # the read ``finished_for`` makes then
                feed.news = False
                got += [entry for _, seq, entry in stored if seq > cursor]
                cursor = stored[-1][1]
                feed.read_through(cursor)
    came, cursor, _ = feed.take(cursor)  # the poll, at the end
    got += came
    got += [entry for _, seq, entry in stored if seq > cursor]
    assert got == [entry for _, _, entry in mine]
