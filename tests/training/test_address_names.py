"""Names by server address (an evaluation aid): which rows get a service, and bad files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from classifier.errors import DatasetError
from training.address_names import AddressNames, load_address_names
from training.manifest import add_row
from training.sessions import session_rows

REPO = Path(__file__).resolve().parents[2]

_FILE = """
[[service]]
name = "youtube"
networks = ["203.0.113.0/24", "2001:db8::/32"]

[[service]]
name = "instagram"
networks = ["203.0.0.0/16"]
"""


def _names(tmp_path: Path, text: str = _FILE) -> AddressNames:
    path = tmp_path / "names.toml"
    path.write_text(text)
    return load_address_names(path)


def test_nameless_rows_take_their_networks_service_and_category(tmp_path: Path) -> None:
    names = _names(tmp_path)
    rows = pd.DataFrame(
        {
            "server": ["203.0.113.9", "203.0.7.1", "2001:db8::1", "203.0.113.9", "198.51.100.1"],
            "service": ["unknown", None, "", "spotify", "unknown"],
            "category": ["unknown", None, "", "audio", "unknown"],
        }
    )
    got = names.apply(rows)
    assert got["service"].tolist() == ["youtube", "instagram", "youtube", "spotify", "unknown"]
    assert got["category"].tolist() == ["video-cdn", "short-video", "video-cdn", "audio", "unknown"]
    assert rows["service"].iloc[0] == "unknown"  # the input is not changed
    assert names.service_of("not an address") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[[service]\n", "not valid TOML"),
        ("x = 1\n", "at least one [[service]]"),
        ('[[service]]\nname = "nope"\nnetworks = ["10.0.0.0/8"]\n', "not a service"),
        ('[[service]]\nname = "youtube"\nnetworks = []\n', "non-empty networks"),
        ('[[service]]\nname = "youtube"\nnetworks = ["10.0.0.300/8"]\n', "bad network"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(DatasetError, match="names.toml") as err:
        _names(tmp_path, text)
    assert reason in str(err.value)
    with pytest.raises(DatasetError, match="cannot read"):
        load_address_names(tmp_path / "missing.toml")


def test_session_rows_group_nameless_flows_by_their_named_service(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    add_row(manifest, REPO / "datasets" / "samples" / "sample.pcap", "web", "web")
    plain = session_rows([manifest], cache_dir=tmp_path)
    assert plain["group"].str.startswith("net:").any()
    everything = _names(tmp_path, '[[service]]\nname = "netflix"\nnetworks = ["0.0.0.0/0"]\n')
    named = session_rows([manifest], cache_dir=tmp_path, address_names=everything)
    assert not named["group"].str.startswith("net:").any()
    assert "netflix" in set(named["group"])
    assert set(named["group"]) - {"netflix"} <= set(plain["group"])  # named flows keep theirs
