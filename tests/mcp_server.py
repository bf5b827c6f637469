"""A Model Context Protocol server for the tests, on the MCP SDK: ``python mcp_server.py``
serves stdio, ``python mcp_server.py http PORT`` streamable HTTP on 127.0.0.1:PORT/mcp."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import Image, MCPServer

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


#: a 1x1 PNG: the bytes of a real image, as an MCP image content block
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@app.tool(structured_output=False)
def swatch(name: str) -> list[object]:
    """A colour swatch, as an image.

    Args:
        name: the colour's name
    """
    return [f"swatch {name}:", Image(data=PIXEL, format="png")]


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        import anyio

        anyio.run(lambda: app.run_streamable_http_async(host="127.0.0.1", port=int(sys.argv[2])))
    else:
        app.run()
