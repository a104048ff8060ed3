"""Key management against a server with a SQLite key store: create, list, use, revoke,
log in; and the answer of a server without one."""

from __future__ import annotations

import pytest

import isol8
from conftest import MASTER_KEY, Server


def test_create_list_use_and_revoke_a_key(server: Server, client: isol8.Client) -> None:
    issued = client.create_key("py-client-test", tenant_id="py-tenant", ttl_ms=3_600_000)
    assert isinstance(issued, isol8.IssuedKey)
    assert issued.key.startswith("isol8_") and len(issued.key) == 70
    assert issued.key_prefix == issued.key[:10] + "..."
    assert (issued.name, issued.tenant_id) == ("py-client-test", "py-tenant")
    assert issued.key not in repr(issued), "repr shows the key"

    listed = {k.id: k for k in client.list_keys(tenant_id="py-tenant")}
    info = listed[issued.id]
    assert isinstance(info, isol8.KeyInfo)
    assert (info.name, info.key_prefix, info.revoked) == ("py-client-test", issued.key_prefix, False)
    assert info.expires_at == issued.expires_at and info.last_used_at is None
    assert "key" not in info.raw
    assert all(k.tenant_id == "py-tenant" for k in listed.values())

    # The key works, in its own tenant: it sees its sessions, not the master's.
    with isol8.Client(server.url, api_key=issued.key) as tenant:
        assert tenant.execute("python", "print('as tenant')").stdout == "as tenant\n"
        with client.session("bash") as master_session:
            with tenant.session("bash") as s:
                seen = [x.id for x in tenant.list_sessions()]
                assert s.id in seen and master_session.id not in seen
                assert {x.tenant_id for x in tenant.list_sessions()} == {"py-tenant"}
        # A database key may not manage keys.
        with pytest.raises(isol8.PermissionDeniedError) as e:
            tenant.create_key("nope")
        assert e.value.status_code == 403
    assert next(k for k in client.list_keys() if k.id == issued.id).last_used_at is not None

    client.revoke_key(issued.id)
    assert next(k for k in client.list_keys() if k.id == issued.id).revoked
    with isol8.Client(server.url, api_key=issued.key) as revoked:
        with pytest.raises(isol8.PermissionDeniedError) as e:
            revoked.execute("python", "print(1)")
    assert (e.value.status_code, e.value.message) == (403, "Invalid API key")


def test_revoking_an_unknown_key_is_not_found(client: isol8.Client) -> None:
    with pytest.raises(isol8.NotFoundError) as e:
        client.revoke_key("00000000-0000-0000-0000-000000000000")
    assert (e.value.status_code, e.value.message) == (404, "Key not found")


def test_a_key_needs_a_name(client: isol8.Client) -> None:
    with pytest.raises(isol8.BadRequestError) as e:
        client.create_key("")
    assert e.value.status_code == 400 and "name" in e.value.message


def test_login_issues_a_working_token_that_can_log_out(server: Server, client: isol8.Client) -> None:
    token = client.login(name="py-login", tenant_id="py-login-tenant", ttl_ms=600_000)
    assert isinstance(token, isol8.LoginToken)
    assert token.token.startswith("isol8_") and token.key_id and token.expires_at
    assert token.token not in repr(token)
    with isol8.Client(server.url, api_key=token.token) as c:
        assert c.execute("bash", cmd="echo in").stdout == "in\n"
        c.revoke_key(token.key_id)  # a database key may revoke itself (logout)
        with pytest.raises(isol8.PermissionDeniedError):
            c.list_sessions()


async def test_async_key_management(aclient: isol8.AsyncClient) -> None:
    issued = await aclient.create_key("py-async", tenant_id="py-async-tenant")
    assert issued.id in [k.id for k in await aclient.list_keys(tenant_id="py-async-tenant")]
    token = await aclient.login()
    assert token.token.startswith("isol8_")
    await aclient.revoke_key(issued.id)
    await aclient.revoke_key(token.key_id)
    with pytest.raises(isol8.NotFoundError):
        await aclient.revoke_key("missing")


def test_without_a_key_store_keys_are_a_bad_request(bare_server: Server) -> None:
    with isol8.Client(bare_server.url, api_key=MASTER_KEY) as c:
        for call in (lambda: c.create_key("x"), c.list_keys, lambda: c.login()):
            with pytest.raises(isol8.BadRequestError) as e:
                call()
            assert (e.value.status_code, e.value.message) == (400, "DB-backed auth is not enabled")
