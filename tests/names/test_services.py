"""Service name rules: matching, the packaged rules' content, and rejection of bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier.errors import ModelError
from classifier.names.services import (
    DEFAULT_RULES_PATH,
    UNKNOWN,
    category_for,
    default_rules,
    load_rules,
    match,
    service_for,
)


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("rr3---sn-4g5e6nzz.googlevideo.com", "youtube"),
        ("www.youtube.com", "youtube"),
        ("WWW.YouTube.COM.", "youtube"),
        ("youtube.com", "youtube"),
        ("i.ytimg.com", "youtube"),
        ("yt3.ggpht.com", "youtube"),
        ("youtubei.googleapis.com", "youtube"),
        ("scontent-mxp1-1.cdninstagram.com", "instagram"),
        ("www.instagram.com", "instagram"),
        ("video.xx.fbcdn.net", "facebook"),
        ("www.facebook.com", "facebook"),
        ("graph.facebook.com", "facebook-api"),
        ("v16-webapp.tiktok.com", "tiktok"),
        ("v19.tiktokcdn.com", "tiktok"),
        ("vcs-va.tiktokv.com", "tiktok"),
        ("sf16-website-login.neutral.ttwstatic.com", "tiktok"),
        ("p16-sign-va.ibytedtos.com", "tiktok"),
        ("log.byteoversea.com", "tiktok"),
        ("api.musical.ly", "tiktok"),
        ("occ-0-1.1.nflxvideo.net", "netflix"),
        ("video-weaver.fra02.hls.ttvnw.net", "twitch"),
        ("static-cdn.jtvnw.net", "twitch"),
        ("audio-ak-spotify-com.akamaized.net", "spotify"),
        ("spclient.wg.spotify.com", "spotify"),
        ("e7.whatsapp.net", "whatsapp"),
        ("us04web.zoom.us", "zoom"),
        ("radcom.webex.com", "webex"),
        ("meet.google.com", "google-meet"),
        ("mozilla.cloudflare-dns.com", "doh"),
        ("dns.google", "doh"),
        ("googleads.g.doubleclick.net", "ads"),
        ("pagead2.googlesyndication.com", "ads"),
        ("ssl.google-analytics.com", "analytics"),
        ("app-measurement.com", "analytics"),
        ("www.google.com", "google"),
        ("notyoutube.com", UNKNOWN),
        ("youtube.com.evil.example", UNKNOWN),
        ("www.ntop.org", UNKNOWN),
        ("", UNKNOWN),
        (None, UNKNOWN),
        (".", UNKNOWN),
        ("a..b", UNKNOWN),
        ("x" * 500, UNKNOWN),
    ],
)
def test_service_for(name: str | None, service: str) -> None:
    assert service_for(name) == service


def test_categories() -> None:
    assert category_for("youtube") == "video-cdn"
    assert category_for("instagram") == "short-video"
    assert category_for("tiktok") == "short-form-service"
    assert category_for("facebook-api") == "api"
    assert category_for("webex") == "call"
    assert category_for("doh") == "doh"
    assert category_for("ads") == "ads"
    assert category_for(UNKNOWN) == UNKNOWN
    assert category_for("no-such-service") == UNKNOWN


def test_longest_suffix_wins_and_reports_suffix() -> None:
    m = match("graph.facebook.com.")
    assert m is not None and (m.service, m.suffix) == ("facebook-api", "graph.facebook.com")
    m = match("upload.facebook.com")
    assert m is not None and (m.service, m.suffix) == ("facebook", "facebook.com")
    assert match("nothing.invalid") is None


def test_a_pattern_names_a_platform_under_another_ones_domain() -> None:
    m = match("Instagram.fbom1-1.fna.fbcdn.net.")
    assert m is not None and (m.service, m.suffix) == ("instagram", "instagram.*.fbcdn.net")
    assert service_for("scontent.fbom1-1.fna.fbcdn.net") == "facebook"
    assert service_for("scontent-mxp1-1.cdninstagram.com") == "instagram"
    assert service_for("notinstagram.x.fbcdn.net") == "facebook"
    assert service_for("audio4-ak-spotify-com.akamaized.net") == "spotify"
    assert service_for("other.akamaized.net") == "cdn"


def test_long_form_categories(tmp_path: Path) -> None:
    packaged = default_rules()
    for category in ("video-cdn", "long-form-video", "social", "cdn", "web", UNKNOWN):
        assert packaged.may_be_long_form(category), category
    for category in ("short-video", "short-form-service", "audio", "call", "live-video"):
        assert not packaged.may_be_long_form(category), category
    assert packaged.may_be_short_form("short-video")
    custom = load_rules(_write(tmp_path, _GOOD))
    assert custom.may_be_long_form("video")  # no long_form_categories: nothing ruled out


def test_default_rules_loaded_once() -> None:
    assert default_rules() is default_rules()
    assert "youtube" in default_rules().services
    assert set(default_rules().categories) >= {"short-form-service", "video-cdn", "call"}


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rules.toml"
    p.write_text(text)
    return p


_GOOD = """
schema = 1
[categories]
video = "video"
[[service]]
name = "a"
category = "video"
suffixes = ["a.example"]
"""


def test_custom_file_loads(tmp_path: Path) -> None:
    rules = load_rules(_write(tmp_path, _GOOD))
    assert rules.service_for("x.a.example") == "a"
    assert rules.category_for("a") == "video"
    assert rules.may_be_short_form("video")  # no short_form_categories: nothing ruled out


def test_short_form_categories_rule_out_the_others(tmp_path: Path) -> None:
    text = _GOOD.replace("schema = 1", "schema = 1\nshort_form_categories = []")
    rules = load_rules(_write(tmp_path, text))
    assert not rules.may_be_short_form("video")
    assert rules.may_be_short_form(UNKNOWN)  # no name: judged by shape
    packaged = default_rules()
    for category in (
        "call",
        "audio",
        "web",
        "long-form-video",
        "live-video",
        "messaging",
        "productivity",
        "system",
    ):
        assert not packaged.may_be_short_form(category), category
    for category in ("short-form-service", "video-cdn", "social", "cdn", UNKNOWN):
        assert packaged.may_be_short_form(category), category


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("schema = 1\n[categories\n", "not valid TOML"),
        (_GOOD.replace("schema = 1", "schema = 2"), "schema"),
        (_GOOD.replace('category = "video"', 'category = "nope"'), "unknown category"),
        (_GOOD.replace('["a.example"]', '["A.Example"]'), "bad suffix"),
        (_GOOD.replace('["a.example"]', '["a..example"]'), "bad suffix"),
        (_GOOD.replace('["a.example"]', "[]"), "non-empty suffixes"),
        (_GOOD.replace('["a.example"]', "[3]"), "bad suffix"),
        (
            _GOOD + '[[service]]\nname = "b"\ncategory = "video"\nsuffixes = ["a.example"]\n',
            "in both",
        ),
        (
            _GOOD + '[[service]]\nname = "a"\ncategory = "video"\nsuffixes = ["b.example"]\n',
            "defined twice",
        ),
        (_GOOD.replace('name = "a"', 'name = "unknown"'), "bad name"),
        (_GOOD.replace('name = "a"', 'name = "a"\nport = 3'), "unknown keys"),
        (
            _GOOD.replace("schema = 1", 'schema = 1\nshort_form_categories = ["nope"]'),
            "short_form_categories",
        ),
        (
            _GOOD.replace("schema = 1", 'schema = 1\nshort_form_categories = "video"'),
            "short_form_categories",
        ),
        (
            _GOOD.replace("schema = 1", 'schema = 1\nlong_form_categories = ["nope"]'),
            "long_form_categories",
        ),
        (_GOOD.replace('name = "a"', 'name = "a"\npatterns = ["a.example"]'), "bad pattern"),
        (_GOOD.replace('name = "a"', 'name = "a"\npatterns = ["A.*.example"]'), "bad pattern"),
        (_GOOD.replace('name = "a"', 'name = "a"\npatterns = "*.example"'), "must be a list"),
        ("schema = 1\n[categories]\nv = 'x'\n", "[[service]]"),
        ("schema = 1\n[[service]]\nname='a'\ncategory='v'\nsuffixes=['a.b']\n", "[categories]"),
    ],
)
def test_bad_files_raise_model_error_naming_file(tmp_path: Path, text: str, reason: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ModelError) as err:
        load_rules(path)
    message = str(err.value)
    assert str(path) in message and reason in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing.toml"):
        load_rules(tmp_path / "missing.toml")


def test_packaged_file_is_the_default() -> None:
    assert DEFAULT_RULES_PATH.name == "services.toml" and DEFAULT_RULES_PATH.exists()
    assert load_rules().services == default_rules().services


@pytest.mark.parametrize(
    ("name", "service", "category"),
    [
        ("outlook.office365.com", "microsoft-365", "productivity"),
        ("northeurope1-mediap.svc.ms", "microsoft-365", "productivity"),
        ("teams.microsoft.com", "teams", "call"),  # the longer suffix wins over microsoft.com
        ("teams.live.com", "teams", "call"),  # ... and over live.com
        ("ctldl.windowsupdate.com", "microsoft", "system"),
        ("uc.dropboxusercontent.com", "dropbox", "productivity"),
        ("app.slack.com", "slack", "productivity"),
        ("gateway.icloud.com", "apple", "system"),
        ("facetime.apple.com", "facetime", "call"),
        ("cache1-fra1.steamcontent.com", "steam", "system"),
    ],
)
def test_work_and_system_services_are_named_and_never_short_form(
    name: str, service: str, category: str
) -> None:
    rules = default_rules()
    assert rules.service_for(name) == service
    assert rules.category_for(service) == category
    assert not rules.may_be_short_form(category)
