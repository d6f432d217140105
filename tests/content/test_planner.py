"""The read planner on its own: which range a read fetches, with no server and no trio."""

from __future__ import annotations

from mkwfs.content.config import ContentConfig
from mkwfs.content.extents import Extents
from mkwfs.content.planner import ReadPlanner
from mkwfs.content.ziphints import LOCAL_HEADER_SIZE

MiB = 1 << 20
SIZE = 100 * MiB
CONFIG = ContentConfig()
WINDOW = CONFIG.random_window


def plan(
    planner: ReadPlanner,
    offset: int,
    until: int | None = None,
    *,
    size: int | None = SIZE,
    ranges: bool | None = True,
    extents: Extents | None = None,
    fetch_starts: tuple[int, ...] = (),
) -> tuple[int, int | None]:
    return planner.plan(
        offset,
        offset + 4096 if until is None else until,
        size=size,
        ranges=ranges,
        extents=Extents() if extents is None else extents,
        fetch_starts=fetch_starts,
    )


def test_a_read_from_the_start_fetches_the_whole_body() -> None:
    assert plan(ReadPlanner(CONFIG), 0) == (0, None)


def test_without_a_size_or_without_range_support_everything_is_one_fetch() -> None:
    assert plan(ReadPlanner(CONFIG), 50 * MiB, size=None) == (0, None)
    assert plan(ReadPlanner(CONFIG), 50 * MiB, ranges=False) == (0, None)


def test_a_read_in_the_middle_fetches_a_window_even_before_range_support_is_known() -> None:
    assert plan(ReadPlanner(CONFIG), 50 * MiB, ranges=None) == (50 * MiB, 50 * MiB + WINDOW)


def test_a_read_near_the_end_fetches_the_whole_tail() -> None:
    tail = SIZE - CONFIG.tail_window
    assert plan(ReadPlanner(CONFIG), SIZE - 100) == (tail, SIZE)
    # What of the tail is on disk already is not fetched again.
    on_disk = Extents([(tail, tail + 1000)])
    assert plan(ReadPlanner(CONFIG), SIZE - 100, extents=on_disk) == (tail + 1000, SIZE)


def test_a_reader_going_on_gets_windows_twice_as_large_up_to_the_maximum() -> None:
    planner = ReadPlanner(CONFIG)
    start, end = plan(planner, 10 * MiB)
    sizes = []
    for _ in range(12):
        assert end is not None
        sizes.append(end - start)
        start, end = plan(planner, end)
    assert sizes[:4] == [WINDOW, 2 * WINDOW, 4 * WINDOW, 8 * WINDOW]
    assert max(sizes) == CONFIG.max_window


def test_a_read_a_little_past_a_window_still_goes_on() -> None:
    planner = ReadPlanner(CONFIG)
    _, end = plan(planner, 10 * MiB)
    assert end is not None
    later = end + CONFIG.near
    assert plan(planner, later) == (later, later + 2 * WINDOW)
    # Further away it is a new random read.
    far = later + 3 * CONFIG.near
    assert plan(planner, far) == (far, far + WINDOW)


def test_a_read_right_after_bytes_on_disk_goes_on() -> None:
    on_disk = Extents([(0, 20 * MiB)])
    assert plan(ReadPlanner(CONFIG), 20 * MiB, extents=on_disk) == (20 * MiB, 20 * MiB + WINDOW)


def test_a_window_stops_at_bytes_on_disk_and_at_a_running_fetch() -> None:
    offset = 10 * MiB
    on_disk = Extents([(offset + 1000, offset + 2000)])
    assert plan(ReadPlanner(CONFIG), offset, extents=on_disk) == (offset, offset + 1000)
    running = (offset + 500, offset - 500)  # only a fetch ahead of the read limits it
    assert plan(ReadPlanner(CONFIG), offset, fetch_starts=running) == (offset, offset + 500)


def test_once_the_members_are_known_a_read_fetches_its_member_and_a_spill() -> None:
    planner = ReadPlanner(CONFIG)
    planner.boundaries = [0, 10 * MiB, 30 * MiB, 31 * MiB]
    # A read that ends in the member from 10 MiB to 30 MiB fetches up to its end, and on.
    assert plan(planner, 10 * MiB, 12 * MiB) == (10 * MiB, 30 * MiB + CONFIG.spill)
    # A small member: at least min_fetch; never past bytes on disk.
    tiny = ReadPlanner(CONFIG)
    tiny.boundaries = [40 * MiB, 40 * MiB + 10]
    assert plan(tiny, 40 * MiB, 40 * MiB + 5) == (40 * MiB, 40 * MiB + 10 + CONFIG.spill)
    on_disk = Extents([(40 * MiB + 100, 41 * MiB)])
    assert plan(tiny, 40 * MiB, 40 * MiB + 5, extents=on_disk) == (40 * MiB, 40 * MiB + 100)


def test_a_read_right_after_a_member_fetch_starts_small_again() -> None:
    planner = ReadPlanner(CONFIG)
    planner.boundaries = [0, 10 * MiB, 30 * MiB]
    _, end = plan(planner, 10 * MiB, 12 * MiB)
    assert end is not None
    assert plan(planner, end) == (end, end + WINDOW)


def test_the_knobs_come_from_the_config() -> None:
    config = ContentConfig(random_window=4096, tail_window=0)
    assert plan(ReadPlanner(config), 50 * MiB) == (50 * MiB, 50 * MiB + 4096)


def test_a_read_of_a_big_members_local_header_fetches_its_head_then_the_rest() -> None:
    planner = ReadPlanner(CONFIG)
    planner.boundaries = [0, 10 * MiB, 30 * MiB]
    head = CONFIG.head_window
    # zipview reads the fixed local header alone: a sniff needs no more than the head.
    assert plan(planner, 10 * MiB, 10 * MiB + LOCAL_HEADER_SIZE) == (10 * MiB, 10 * MiB + head)
    # A reader going on past the head (cat) gets the rest of the member in one fetch.
    on_disk = Extents([(10 * MiB, 10 * MiB + head)])
    rest = plan(planner, 10 * MiB + head, 10 * MiB + head + 4096, extents=on_disk)
    assert rest == (10 * MiB + head, 30 * MiB + CONFIG.spill)


def test_only_a_header_read_at_a_member_start_fetches_just_the_head() -> None:
    planner = ReadPlanner(CONFIG)
    planner.boundaries = [0, 10 * MiB, 30 * MiB]
    # The kernel reads whole pages: a page at a member's start is a reader of the member.
    assert plan(planner, 10 * MiB, 10 * MiB + 4096) == (10 * MiB, 30 * MiB + CONFIG.spill)
    # A member no longer than the head is fetched whole, as before.
    small = ReadPlanner(CONFIG)
    small.boundaries = [10 * MiB, 10 * MiB + CONFIG.head_window]
    assert plan(small, 10 * MiB, 10 * MiB + LOCAL_HEADER_SIZE) == (
        10 * MiB, 10 * MiB + CONFIG.head_window + CONFIG.spill,
    )  # fmt: skip
