"""File names for downloads: safe, unique, stable, short enough."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mkwfs.remote.models import Download, parse_download
from mkwfs.tree.names import NAME_MAX, file_names, is_probe_name, safe_name


def download(ident: int, name: Any, file_name: Any = None) -> Download:
    return parse_download({"id": ident, "build_id": 1, "name": name, "file_name": file_name})


def names_of(*downloads: Download) -> list[bytes]:
    return [name for name, _ in file_names(downloads)]


def test_plain_names_are_kept() -> None:
    assert names_of(download(1, "CORE_DV_HLS_2026-4-2_10_14.zip")) == [
        b"CORE_DV_HLS_2026-4-2_10_14.zip"
    ]


def test_slash_nul_and_control_characters_are_replaced() -> None:
    assert names_of(download(1, "a/b.zip"), download(2, "x\x00y\n.zip")) == [
        b"a_b.zip",
        b"x_y_.zip",
    ]


def test_missing_names_fall_back_to_the_server_file_name_then_the_id() -> None:
    assert names_of(
        download(1, None, "/files/results/5139_808_iics_X.zip"),
        download(2, "", "/files/results/other.zip"),
        download(3, None, None),
        download(4, "..", None),
        download(5, ".", "/files/"),
    ) == [b"5139_808_iics_X.zip", b"other.zip", b"download-3", b"download-4", b"download-5"]


def test_umlauts_spaces_and_leading_dots_are_kept() -> None:
    assert names_of(download(1, "Übersicht Daten ä.zip"), download(2, ".hidden.zip")) == [
        "Übersicht Daten ä.zip".encode(),
        b".hidden.zip",
    ]


def test_duplicates_get_the_id_and_the_lowest_id_keeps_the_name() -> None:
    assert names_of(download(7, "X.zip"), download(3, "X.zip"), download(5, "X.zip")) == [
        b"X.zip",
        b"X~5.zip",
        b"X~7.zip",
    ]


def test_a_real_name_that_looks_disambiguated_does_not_collide() -> None:
    names = names_of(download(1, "X.zip"), download(2, "X.zip"), download(3, "X~2.zip"))
    assert len(set(names)) == 3
    assert names[0] == b"X.zip"
    assert names[2] == b"X~2.zip"


def test_long_names_are_shortened_keeping_the_extension_and_whole_characters() -> None:
    (name,) = names_of(download(1, "ä" * 200 + ".zip"))
    assert len(name) <= NAME_MAX
    assert name.endswith(b".zip")
    name.decode("utf-8")  # no character cut in half
    twins = names_of(download(1, "x" * 300 + ".zip"), download(2, "x" * 300 + ".zip"))
    assert twins[1].endswith(b"~2.zip")
    assert all(len(n) <= NAME_MAX for n in twins)
    assert twins[0] != twins[1]


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.text(max_size=300)),
            st.one_of(st.none(), st.text(max_size=100)),
        ),
        max_size=40,
    )
)
def test_any_names_map_to_unique_safe_names(raw: list[tuple[str | None, str | None]]) -> None:
    downloads = [download(i + 1, name, path) for i, (name, path) in enumerate(raw)]
    names = names_of(*downloads)
    assert len(names) == len(downloads)
    assert len(set(names)) == len(names)
    for name in names:
        assert 0 < len(name) <= NAME_MAX
        assert b"/" not in name and b"\x00" not in name
        assert name not in (b".", b"..")


@given(st.lists(st.sampled_from(["a.zip", "b.zip", "a~2.zip", None, ""]), min_size=1, max_size=12))
def test_a_new_download_never_renames_the_earlier_ones(raw: list[str | None]) -> None:
    downloads = [download(i + 1, name, None) for i, name in enumerate(raw)]
    before = dict((d.id, n) for n, d in file_names(downloads[:-1]))
    after = dict((d.id, n) for n, d in file_names(downloads))
    for ident, name in before.items():
        if name in (b"a.zip", b"b.zip"):  # names that did not need a marker stay put
            assert after[ident] == name


def test_names_desktops_probe_for_get_a_leading_underscore() -> None:
    probes = [".hidden", ".Trash", ".Trash-1000", ".xdg-volume-info", "autorun.inf",
              ".directory", ".DS_Store", "desktop.ini", "Desktop.INI", "._x.zip"]  # fmt: skip
    for probe in probes:
        assert is_probe_name(probe.encode()), probe
    downloads = [download(i, name) for i, name in enumerate(probes, start=1)]
    assert names_of(*downloads) == [b"_" + p.encode() for p in probes]
    for name in ("hidden", ".Trash-x", ".hidden_result.zip", "_.hidden", "autorun.inf.zip"):
        assert not is_probe_name(name.encode()), name
    assert safe_name(".DS_Store", avoid_probes=False) == ".DS_Store"
