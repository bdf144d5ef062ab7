"""What a grpc writer holds of one peer's pushes (``_Pushed``): a check that the peer holds what it missed lets its
ack past them once the entry pushed after the check is acknowledged, unless an entry went missing again meanwhile."""

from __future__ import annotations

from mesh_core.backends.grpc.memory.base import _Pushed


def _pushed(*units: tuple[int, int, int]) -> _Pushed:
    pushed = _Pushed(next_seq=max((u[0] for u in units), default=0) + 1)
    pushed.in_flight.extend(units)
    return pushed


def test_a_confirmed_peer_is_acked_past_what_it_missed_once_the_check_entry_is_acked() -> None:
    pushed = _pushed((1, 1, 10), (2, 11, 20))
    pushed.block(21)  # cursors 21..30 never reached it
    pushed.in_flight.append((3, 31, 40))
    assert pushed.ack(40) == 0  # nothing acknowledged yet
    blocks = pushed.blocks
    pushed.in_flight.append((4, 21, 40))  # the check's entry, pushed after the peer was found holding 21..40
    pushed.confirm_at(4, 40, blocks)
    pushed.acked_through(3)
    assert pushed.ack(40) == 20  # not yet: the check's entry is not acknowledged
    pushed.acked_through(4)
    assert pushed.blocked is None and pushed.confirming is None and pushed.ack(45) == 45


def _checking_after_a_miss() -> _Pushed:
    """Cursors 1..10 pushed in flight, 11.. never got; a check found the peer holding them and pushed seq 2 (11..20)."""
    pushed = _pushed((1, 1, 10))
    pushed.block(11)
    blocks = pushed.blocks
    pushed.in_flight.append((2, 11, 20))
    pushed.confirm_at(2, 20, blocks)
    return pushed


def test_an_entry_missed_again_during_the_check_voids_it() -> None:
    pushed = _checking_after_a_miss()
    pushed.block(21)  # a push after the check went missing too
    pushed.acked_through(2)
    assert pushed.blocked == 11 and pushed.ack(30) == 10 and pushed.confirming is None


def test_a_check_whose_push_is_not_acknowledged_in_time_is_void_and_a_late_ack_clears_nothing() -> None:
    pushed = _checking_after_a_miss()
    assert not pushed.confirm_lapsed(pushed.confirm_by - 0.1) and pushed.confirming is not None
    assert pushed.confirm_lapsed(pushed.confirm_by) and pushed.confirming is None
    assert not pushed.confirm_lapsed(pushed.confirm_by + 10)  # nothing left to lapse
    pushed.acked_through(2)  # the lost push's ack, had it come after all: the void check clears nothing
    assert pushed.blocked == 11 and pushed.ack(30) == 10
