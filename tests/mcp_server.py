"""A Model Context Protocol server for the tests, on the MCP SDK: ``python mcp_server.py``
serves stdio, ``python mcp_server.py http PORT`` streamable HTTP on 127.0.0.1:PORT/mcp."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

from ponder.tools import calculate

app = MCPServer("units")


@app.tool()
def convert(value: float, unit: str) -> str:
    """Convert a length to metres.

    Args:
        value: the number
        unit: km, cm or mm
    """
    factors = {"km": 1000.0, "cm": 0.01, "mm": 0.001}
    if unit not in factors:
        raise ValueError(f"unknown unit {unit!r}: use km, cm or mm")
    return str(value * factors[unit])


@app.tool()
def evaluate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly.

    Args:
        expression: for example (3 + 4) * 2
    """
    return calculate(expression)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        import anyio

        anyio.run(lambda: app.run_streamable_http_async(host="127.0.0.1", port=int(sys.argv[2])))
    else:
        app.run()
