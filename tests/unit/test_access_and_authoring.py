"""The pure rules behind the shared header's service links and the course page's uploads and
roster: who may use which service, file names that stay inside a course, CSV rosters."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubservices.common.access import AccessRule, Peer, parse_peers, peers_json
from hubservices.common.hubconfig import services_and_roles
from hubservices.formgrader.authoring import (
    BadUpload,
    Student,
    check_upload,
    roster_from_csv,
    roster_from_group,
    source_file,
    source_files,
)

TEACHER = {"kind": "user", "name": "t", "admin": False, "groups": ["formgrade-course101"]}
ADMIN = {"kind": "user", "name": "a", "admin": True, "groups": []}
STUDENT = {"kind": "user", "name": "s", "admin": False, "groups": ["course101-students"]}


def test_rules_decide_as_each_service_does() -> None:
    stats = AccessRule(admin=True, groups=frozenset({"staff"}))
    formgrader = AccessRule(admin=True, group_pattern="formgrade-{course}")
    assert stats.allows(ADMIN) and not stats.allows(TEACHER) and not stats.allows(STUDENT)
    assert formgrader.allows(TEACHER) and not formgrader.allows(STUDENT)
    assert not AccessRule(admin=False).allows(ADMIN)
    # a service token is in only when named
    assert not stats.allows({"kind": "service", "name": "x"})
    assert AccessRule(users=frozenset({"x"})).allows({"kind": "service", "name": "x"})


def test_peers_round_trip_and_bad_ones_are_named() -> None:
    peers = [Peer("stats", "Hub usage", AccessRule(groups=frozenset({"staff"})))]
    assert parse_peers(peers_json(peers)) == peers
    assert parse_peers("") == []
    for bad, says in (("{", "not JSON"), ("[]", "object"), ('{"x": {"title": "X"}}', "access")):
        with pytest.raises(ValueError, match=says):
            parse_peers(bad)


def test_hubconfig_hands_every_service_the_others_rules() -> None:
    entries, _ = services_and_roles(["cull", "formgrader"], args={"cull": ["--allowed-groups=ops"]})
    for entry in entries:
        peers = {p.name: p for p in parse_peers(entry["environment"]["HUBSERVICES_PEERS"])}
        assert peers["cull"].rule.groups == {"ops"}
        assert peers["formgrader"].rule.group_pattern == "formgrade-{course}"


@pytest.mark.parametrize("name", [".ipynb_checkpoints", "../x", "a/b", "", "*.ipynb", "-x"])
def test_upload_names_that_could_leave_the_folder_are_refused(name: str) -> None:
    with pytest.raises(BadUpload):
        check_upload(name, b"", 10)
    with pytest.raises(BadUpload):
        source_file(Path("/srv/c"), "ps1", name)


def test_uploads_over_the_limit_are_refused_and_listing_skips_odd_files(tmp_path: Path) -> None:
    check_upload("problem1.ipynb", b"x" * 10, 10)
    with pytest.raises(BadUpload, match="limit is 10"):
        check_upload("problem1.ipynb", b"x" * 11, 10)
    folder = tmp_path / "source" / "ps1"
    folder.mkdir(parents=True)
    (folder / "problem1.ipynb").write_text("{}")
    (folder / ".hidden").write_text("x")
    (folder / "sub").mkdir()
    (folder / "link.ipynb").symlink_to("/etc/passwd")
    assert [f.name for f in source_files(tmp_path, "ps1")] == ["problem1.ipynb"]
    with pytest.raises(BadUpload):
        source_files(tmp_path, "..")


def test_rosters_from_csv_and_group() -> None:
    text = "\ufeffid,first_name,last_name,email\nrita,Rita,Right,r@x.org\nbob,,,\n"
    assert roster_from_csv(text.lstrip("\ufeff")) == [
        Student("rita", "Rita", "Right", "r@x.org"),
        Student("bob"),
    ]
    with pytest.raises(BadUpload, match="'id' column"):
        roster_from_csv("name\nrita\n")
    with pytest.raises(BadUpload, match="line 3"):
        roster_from_csv("id\nrita\n=cmd|x\n")
    # the hub name is the only name the hub has: shown, never "None, None"
    assert roster_from_group(["b", "a", "<x>"]) == [
        Student("a", last_name="a"),
        Student("b", last_name="b"),
    ]
