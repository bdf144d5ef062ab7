"""Reading who holds a SQLite file's write lock from the kernel's lock table (``/proc/locks`` text)."""

from __future__ import annotations

import os

from mesh_core.backends.sqlite.locks import WAL_WRITE_LOCK_BYTE, holders_in

DEV = os.makedev(0xFE, 0x01)
TABLE = """\
1: POSIX  ADVISORY  READ 900 fe:01:77 128 128
2: POSIX  ADVISORY  WRITE 901 fe:01:77 120 120
2: -> POSIX  ADVISORY  WRITE 902 fe:01:77 120 120
3: POSIX  ADVISORY  WRITE 903 fe:01:78 120 120
4: POSIX  ADVISORY  WRITE 904 08:01:77 120 120
5: OFDLCK ADVISORY  WRITE -1 fe:01:77 0 EOF
6: FLOCK  ADVISORY  WRITE 905 fe:01:77 0 EOF
7: POSIX  ADVISORY  WRITE 906 fe:01:79 100 EOF
garbage line
"""


def test_the_holder_of_the_write_byte_on_that_file_only() -> None:
    # the reader on byte 128, the waiter (->), other inodes, another device, OFD and flock locks are not holders
    assert holders_in(TABLE, DEV, 77, WAL_WRITE_LOCK_BYTE) == [901]


def test_a_range_to_the_end_of_the_file_covers_the_byte() -> None:
    assert holders_in(TABLE, DEV, 79, WAL_WRITE_LOCK_BYTE) == [906]
    assert holders_in(TABLE, DEV, 79, 99) == []


def test_no_lock_table_no_holder() -> None:
    assert holders_in("", DEV, 77, WAL_WRITE_LOCK_BYTE) == []
