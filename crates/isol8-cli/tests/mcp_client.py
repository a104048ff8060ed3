"""`isol8 mcp` driven by the official Python MCP SDK (the `mcp` package), as an MCP host
would: over stdio (the SDK spawns `isol8 mcp`) and over streamable HTTP (a running
`isol8 mcp --http`). Run by crates/isol8-cli/tests/mcp.rs; exits non-zero on the first
failed check, printing what failed.

usage: mcp_client.py stdio ISOL8_BINARY
       mcp_client.py http URL TOKEN
"""

import asyncio
import base64
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

TOOLS = {
    "run_code",
    "create_session",
    "run_in_session",
    "write_file",
    "read_file",
    "end_session",
    "list_runtimes",
}


def text(result):
    return result.content[0].text


async def exercise(session: ClientSession) -> None:
    init = await session.initialize()
    assert init.server_info.name == "isol8", init

    tools = (await session.list_tools()).tools
    names = {t.name for t in tools}
    assert names == TOOLS, names
    for tool in tools:
        assert tool.description and len(tool.description) > 40, tool
        assert tool.input_schema.get("additionalProperties") is False, tool.input_schema

    runtimes = await session.call_tool("list_runtimes", {})
    assert not runtimes.is_error, text(runtimes)
    assert "python" in {r["name"] for r in runtimes.structured_content["runtimes"]}

    ran = await session.call_tool(
        "run_code",
        {
            "runtime": "python",
            "code": "import sys; print(input() * 2); print('warned', file=sys.stderr); sys.exit(4)",
            "stdin": "ab\n",
        },
    )
    assert not ran.is_error, text(ran)
    out = ran.structured_content
    assert out["stdout"] == "abab\n", out
    assert "warned" in out["stderr"], out
    assert out["exitCode"] == 4, out
    assert "exit code: 4" in text(ran), text(ran)

    refused = await session.call_tool(
        "run_code", {"runtime": "python", "code": "print(1)", "network": "host"}
    )
    assert refused.is_error, text(refused)
    assert text(refused).startswith("error: ") and "allowHostNetwork" in text(refused), text(refused)

    bad_args = await session.call_tool("run_code", {"runtime": "python", "code": "1", "memoryLimit": "64g"})
    assert bad_args.is_error and "memoryLimit" in text(bad_args), text(bad_args)

    created = await session.call_tool("create_session", {"runtime": "python"})
    assert not created.is_error, text(created)
    sid = created.structured_content["sessionId"]
    wrote = await session.call_tool(
        "write_file", {"sessionId": sid, "path": "data.bin", "content": base64.b64encode(b"\x00\xffpy").decode(), "encoding": "base64"}
    )
    assert not wrote.is_error, text(wrote)
    ran = await session.call_tool(
        "run_in_session",
        {"sessionId": sid, "code": "d = open('data.bin','rb').read(); open('out.txt','w').write(d[2:].decode().upper()); print(len(d))"},
    )
    assert not ran.is_error and ran.structured_content["stdout"] == "4\n", text(ran)
    read = await session.call_tool("read_file", {"sessionId": sid, "path": "/sandbox/out.txt"})
    assert not read.is_error and text(read) == "PY", text(read)
    ended = await session.call_tool("end_session", {"sessionId": sid})
    assert not ended.is_error, text(ended)
    gone = await session.call_tool("run_in_session", {"sessionId": sid, "code": "print(1)"})
    assert gone.is_error and "no session" in text(gone), text(gone)

    # A session left open: ending the connection must end it (checked by the Rust test).
    left = await session.call_tool("create_session", {"runtime": "bash"})
    assert not left.is_error, text(left)
    ran = await session.call_tool(
        "run_in_session", {"sessionId": left.structured_content["sessionId"], "cmd": "echo here"}
    )
    assert not ran.is_error and ran.structured_content["stdout"] == "here\n", text(ran)
    print(f"LEFT_CONTAINER={ran.structured_content['containerId']}")


async def over_stdio(binary: str) -> None:
    params = StdioServerParameters(command=binary, args=["mcp"])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await exercise(session)


async def over_http(url: str, token: str) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await exercise(session)


def main() -> None:
    if sys.argv[1] == "stdio":
        asyncio.run(over_stdio(sys.argv[2]))
    elif sys.argv[1] == "http":
        asyncio.run(over_http(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
    print("python mcp client: all checks passed")


if __name__ == "__main__":
    main()
