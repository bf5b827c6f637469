"""Importing Archon configurations (``ponder import-archon CONFIG.json``).

An Archon config is ``{"name": ..., "layers": [[{type, model, model_type, temperature,
samples, top_k, max_tokens, ...}, ...], ...]}`` (a layer may also be ``{"models": [...]}``).
Each layer becomes one Ponder layer; each entry one component; each distinct
(model_type, model) one entry under ``models``. See docs/workflows.md for the mapping.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import Any

import yaml

from ponder.workflows._build import Problem, WorkflowError
from ponder.workflows._spec import WorkflowSpec

__all__ = ["archon_to_spec", "spec_to_yaml"]

# Archon model_type -> Ponder provider (``None``: an OpenAI-compatible server at a URL)
_PROVIDERS: dict[str, str | None] = {
    "openai_api": "openai",
    "anthropic_api": "anthropic",
    "together_api": "together",
    "google_api": "gemini",
    "groq_api": "groq",
    "vllm": None,
    "local": None,
    "tgi": None,
}
_LOCAL_URL = "${PONDER_ARCHON_URL:-http://127.0.0.1:8000/v1}"
_KNOWN_KEYS = {
    "type",
    "model",
    "model_type",
    "temperature",
    "samples",
    "top_k",
    "max_tokens",
    "use_critiques",
}
_IGNORED_KEYS = {"max_context_length", "checkpoint", "use_system_prompt"}


def _model_ref(model_type: str, model: str) -> str:
    key = model_type.lower()
    if key not in _PROVIDERS:
        known = ", ".join(sorted(_PROVIDERS))
        raise ValueError(f"model_type {model_type!r} has no counterpart; known: {known}")
    provider = _PROVIDERS[key]
    if provider is None:
        return f"vllm:{model}@{_LOCAL_URL}"
    return f"{provider}:{model}"


def _name(model: str, used: dict[str, str], ref: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "_", model.lower().split("/")[-1]).strip("_") or "model"
    name = base
    k = 2
    while name in used and used[name] != ref:
        name = f"{base}_{k}"
        k += 1
    used[name] = ref
    return name


def archon_to_spec(
    config: dict[str, Any],
    *,
    model_map: Sequence[tuple[str, str]] = (),
    all_models: str | None = None,
) -> tuple[WorkflowSpec, list[str]]:
    """A Ponder workflow for an Archon config, and notes on what did not carry over.

    ``model_map`` rebinds Archon's model names (glob patterns, first match wins) to model
    references; ``all_models`` points every component at one reference (run a published
    stack on the endpoint one has)."""
    problems: list[Problem] = []
    notes: list[str] = []
    rebound: dict[str, str] = {}

    def bind(model: str, ref: str) -> str:
        target = all_models or next(
            (r for pattern, r in model_map if fnmatch.fnmatchcase(model, pattern)), None
        )
        if target is None:
            return ref
        rebound[model] = target
        return target

    layers_in = config.get("layers")
    if not isinstance(layers_in, list) or not layers_in:
        raise WorkflowError([Problem(("layers",), "an Archon config needs a list of layers")])
    models: dict[str, str] = {}
    layers: list[list[dict[str, Any]]] = []
    has_verifier = False
    has_tests = False
    for i, layer in enumerate(layers_in):
        if isinstance(layer, dict) and "type" in layer:
            entries: Any = [layer]  # a layer written as one bare component
        else:
            entries = layer.get("models") if isinstance(layer, dict) else layer
        if not isinstance(entries, list) or not entries:
            problems.append(
                Problem(
                    ("layers", i),
                    "a layer is a list of components, {models: [...]}, or one component "
                    "with a 'type'",
                )
            )
            continue
        out: list[dict[str, Any]] = []
        for j, e in enumerate(entries):
            at: tuple[str | int, ...] = ("layers", i, j)
            if not isinstance(e, dict) or "type" not in e:
                problems.append(Problem(at, "each entry needs a 'type'"))
                continue
            kind = str(e["type"])
            params: dict[str, Any] = {}
            ref_name: str | None = None
            if "model" in e:
                try:
                    ref = bind(
                        str(e["model"]),
                        _model_ref(str(e.get("model_type", "vllm")), str(e["model"])),
                    )
                except ValueError as err:
                    problems.append(Problem((*at, "model_type"), str(err)))
                    continue
                ref_name = _name(str(e["model"]), models, ref)
                models[ref_name] = ref
            temperature = e.get("temperature")
            if kind == "generator":
                comp = "generate"
                params = {"n": int(e.get("samples", 1))}
                if temperature is not None:
                    params["temperature"] = temperature
            elif kind == "critic":
                comp = "critique"
                if temperature is not None:
                    params["temperature"] = temperature
            elif kind == "ranker":
                comp = "rank"
                if "top_k" in e:
                    params["top_k"] = int(e["top_k"])
                if e.get("use_critiques"):
                    params["use_critiques"] = True
            elif kind == "fuser":
                comp = "fuse"
                params = {"n": int(e.get("samples", 1))}
                if temperature is not None:
                    params["temperature"] = temperature
            elif kind == "verifier":
                comp = "verify"
                has_verifier = True
                notes.append(
                    f"layer {i + 1}: Archon's verifier drops rejected candidates; Ponder's "
                    "scores them (verifier) and the final pick prefers accepted ones"
                )
            elif kind == "unit_test_generator":
                comp = "write_tests"
                params = {"kind": "natural"}  # Archon's tests are sentences, not code
            elif kind == "unit_test_evaluator":
                comp = "judge_tests"  # a model judges each test, as in Archon
                has_tests = True
            else:
                message = f"Archon type {kind!r} has no counterpart"
                problems.append(Problem((*at, "type"), message))
                continue
            takes_tokens = ("generate", "critique", "rank", "fuse", "verify", "write_tests",
                            "judge_tests")  # fmt: skip
            if "max_tokens" in e and comp in takes_tokens:
                params["max_tokens"] = int(e["max_tokens"])
            extra = sorted(set(e) - _KNOWN_KEYS - _IGNORED_KEYS)
            if extra:
                notes.append(f"layer {i + 1}, {kind}: ignored {', '.join(extra)}")
            if e.get("top_k") is not None and comp not in ("rank",):
                notes.append(f"layer {i + 1}, {kind}: top_k applies to rankers only; ignored")
            entry: dict[str, Any] = {comp: {**({"model": ref_name} if ref_name else {}), **params}}
            out.append(entry)
        layers.append(out)
    if problems:
        raise WorkflowError(problems, source="archon config")
    unused = [p for p, _ in model_map if not any(fnmatch.fnmatchcase(m, p) for m in rebound)]
    if unused and all_models is None:
        raise WorkflowError(
            [Problem(("model_map",), f"--model-map {p}=...: no model of the config matches")
             for p in unused],
            source="archon config",
        )  # fmt: skip
    for model, target in sorted(rebound.items()):
        notes.append(f"model {model} rebound to {target}")
    layers.append(
        [
            {
                "best_of_n": {
                    "score": "verifier" if has_verifier else "tests" if has_tests else "rank",
                    "tie_break": "first",
                }
            }
        ]
    )
    notes.append(
        "a final best_of_n picks the answer (Archon returns the first candidate of its last layer)"
    )
    data = {
        "name": str(config.get("name", "archon-import")),
        "models": models,
        "layers": [layer[0] if len(layer) == 1 else layer for layer in layers],
    }
    return WorkflowSpec.model_validate(data), notes


def spec_to_yaml(spec: WorkflowSpec, notes: list[str] | None = None) -> str:
    """The spec as a short-form YAML workflow file (with ``notes`` as comments)."""
    layers: list[Any] = []
    for node in spec.layers:
        comps = []
        for c in node.components:
            body = {**({"model": c.model} if c.model else {}), **c.params}
            comps.append({c.component: body} if body else c.component)
        layers.append(comps[0] if len(comps) == 1 else comps)
    data = {
        "name": spec.name,
        "models": {k: m.ref for k, m in spec.models.items()},
        "layers": layers,
    }
    head = "".join(f"# {n}\n" for n in notes or [])
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)
