"""Our hub client against the real hub: long lists, names with any character, servers."""

from __future__ import annotations

import asyncio

import pytest

from hubservices.common.hubapi import HubAPI, HubAPIError, MissingScopeError
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

AWKWARD_NAMES = ["dana", "dana#1", "dana?x=1", "50%", "x y", "ünï", "dana%231"]


async def test_lists_are_not_cut_at_the_hubs_page_limit(hub: Hub, hub_api: HubAPI, unique) -> None:
    names = [unique(f"many{i:03}") for i in range(450)]
    await hub_api.create_users(names)
    listed = {u["name"] for u in await hub_api.list_users()}
    assert set(names) <= listed
    async with HubAPI(hub.api_url, hub.admin_token, page_size=100) as small_pages:
        assert set(names) <= {u["name"] for u in await small_pages.list_users()}


async def test_awkward_names_address_only_themselves(hub_api: HubAPI, unique) -> None:
    names = [unique(n) if i else n for i, n in enumerate(AWKWARD_NAMES)]
    await hub_api.create_users(names)
    for name in names:
        assert (await hub_api.get_user(name))["name"] == name
    await hub_api.delete_user(names[1])  # "dana#1-…"
    assert (await hub_api.get_user("dana"))["name"] == "dana"
    with pytest.raises(HubAPIError) as gone:
        await hub_api.get_user(names[1])
    assert gone.value.status == 404


async def test_groups_and_version(hub_api: HubAPI, unique) -> None:
    user, group = unique("member"), unique("group #1")
    await hub_api.create_users([user])
    await hub_api.create_group(group)
    await hub_api.add_group_users(group, [user])
    assert group in (await hub_api.get_user(user))["groups"]
    assert group in {g["name"] for g in await hub_api.list_groups()}
    assert hub_api.hub_version and hub_api.hub_version[0].isdigit()


async def test_start_and_stop_a_real_server(hub_api: HubAPI, unique) -> None:
    user = unique("runner #1")
    await hub_api.create_users([user])
    assert await hub_api.start_server(user) in (201, 202)
    for _ in range(300):
        model = await hub_api.get_user(user)
        if model["servers"].get("", {}).get("ready"):
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail(f"server of {user} never became ready")
    assert await hub_api.stop_server(user) in (202, 204)
    for _ in range(150):
        if not (await hub_api.get_user(user))["servers"]:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail(f"server of {user} never stopped")


async def test_a_token_without_the_scope_names_it(hub: Hub, hub_api: HubAPI) -> None:
    token = await hub_api.create_token("admin", scopes=["read:users:name!user"])
    async with HubAPI(hub.api_url, token) as weak:
        with pytest.raises(MissingScopeError) as denied:
            await weak.list_groups()
    assert "list:groups" in str(denied.value)
