"""Importing Archon configurations (``ponder import-archon CONFIG.json``).

An Archon config is ``{"name": ..., "layers": [[{type, model, model_type, temperature,
samples, top_k, max_tokens, ...}, ...], ...]}``; a layer may also be
``{"branches": k, "models": [...]}`` or one bare component. Each layer becomes one Ponder
layer (plus a rank step before a fuser that has a ``ranker_config``); each entry one
component; each distinct (model_type, model) one entry under ``models``. docs/workflows.md
has the full mapping table and every deviation with its reason.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from ponder.workflows._build import Problem, WorkflowError
from ponder.workflows._spec import WorkflowSpec

__all__ = ["PAIRRM", "archon_to_spec", "spec_to_yaml"]

# Archon model_type -> Ponder provider (``None``: an OpenAI-compatible server at a URL)
_PROVIDERS: dict[str, str | None] = {
    "openai_api": "openai",
    "anthropic_api": "anthropic",
    "together_api": "together",
    "google_api": "gemini",
    "groq_api": "groq",
    "bedrock_api": "bedrock",
    "vllm": None,
    "local": None,
    "tgi": None,
}
_LOCAL_URL = "${PONDER_ARCHON_URL:-http://127.0.0.1:8000/v1}"
PAIRRM = "llm-blender/PairRM"
# keys Archon reads that carry no meaning for Ponder (a local checkpoint path, context size)
_IGNORED_KEYS = {"max_context_length", "checkpoint", "use_system_prompt", "model_type"}
# component keys each Archon type understands (the rest are noted as not carried over)
_KEYS: dict[str, set[str]] = {
    "generator": {"samples", "temperature", "max_tokens", "no_system", "top_k"},
    "critic": {"samples", "temperature", "max_tokens", "top_k", "ranker_batch_size"},
    "ranker": {"samples", "temperature", "max_tokens", "top_k", "use_critiques",
               "ranker_batch_size"},
    "fuser": {"samples", "temperature", "max_tokens", "top_k", "length_control",
              "length_contorl", "top_k_generations", "fuse_generations_count", "ranker_config",
              "use_critiques", "ranker_batch_size", "remove_unit_tests_from_prompt"},
    "verifier": {"samples", "temperature", "max_tokens", "first_k", "batch_num", "top_k"},
    "unit_test_generator": {"samples", "temperature", "max_tokens", "unit_test_cap"},
    "unit_test_evaluator": {"samples", "temperature", "max_tokens", "top_k", "first_k",
                            "first_pass", "remove_unit_tests_from_prompt", "unit_test_cap"},
}  # fmt: skip
# keys Archon's code accepts but never reads: accepted here too, with no effect
_UNREAD = {
    ("generator", "top_k"),
    ("critic", "top_k"),
    ("critic", "ranker_batch_size"),
    ("fuser", "top_k"),
    ("fuser", "use_critiques"),
    ("fuser", "ranker_batch_size"),
    ("fuser", "remove_unit_tests_from_prompt"),
    ("fuser", "length_contorl"),
    ("verifier", "batch_num"),
    ("verifier", "top_k"),
    ("unit_test_evaluator", "unit_test_cap"),
}
_COMPONENT = {
    "generator": "generate",
    "critic": "critique",
    "ranker": "rank",
    "fuser": "fuse",
    "verifier": "verify",
    "unit_test_generator": "write_tests",
    "unit_test_evaluator": "judge_tests",
}
Branches = Literal["replicate", "ignore"]


def _model_ref(model_type: str, model: str) -> str:
    key = model_type.lower()
    if key not in _PROVIDERS:
        known = ", ".join(sorted(_PROVIDERS))
        raise ValueError(
            f"model_type {model_type!r} has no counterpart; known: {known} (or the PairRM "
            f"ranker, model {PAIRRM!r})"
        )
    provider = _PROVIDERS[key]
    if provider is None:
        return f"vllm:{model}@{_LOCAL_URL}"
    if provider == "bedrock":
        model = model.removeprefix("bedrock/")
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


def _layer_entries(
    layer: Any, i: int, branches: Branches, notes: list[str], problems: list[Problem]
) -> list[Any] | None:
    """The component entries of one layer in any of Archon's three forms."""
    if isinstance(layer, list):
        entries: list[Any] = layer
    elif isinstance(layer, dict) and "type" in layer:
        entries = [layer]  # a layer written as one bare component
    elif isinstance(layer, dict) and isinstance(layer.get("models"), list):
        entries = layer["models"]
        k = layer.get("branches", 1)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            problems.append(Problem(("layers", i, "branches"), "branches must be an integer >= 1"))
            return None
        extra = sorted(set(layer) - {"models", "branches"})
        if extra:
            notes.append(f"layer {i + 1}: ignored {', '.join(extra)}")
        if k > 1 and branches == "replicate":
            entries = entries * k
            notes.append(
                f"layer {i + 1}: branches: {k} runs its {len(layer['models'])} component(s) "
                f"{k} times, each with its own seeds (Archon's current loader reads only "
                "'models'; use --branches ignore for that)"
            )
        elif k > 1:
            notes.append(f"layer {i + 1}: branches: {k} ignored, as Archon's loader does")
    else:
        entries = []
    if not entries:
        problems.append(
            Problem(
                ("layers", i),
                "a layer is a list of components, {branches: k, models: [...]}, or one "
                "component with a 'type'",
            )
        )
        return None
    return entries


@dataclass
class _Importer:
    config: dict[str, Any]
    model_map: Sequence[tuple[str, str]]
    all_models: str | None
    reward_url: str | None
    branches: Branches
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unread: set[tuple[str, str]] = field(default_factory=set)
    rebound: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    judge: str | None = None  # the model that judges PairRM's comparisons

    def bind(self, model: str, ref: str) -> str:
        target = self.all_models or next(
            (r for pattern, r in self.model_map if fnmatch.fnmatchcase(model, pattern)), None
        )
        if target is None:
            return ref
        self.rebound[model] = target
        return target

    def model_name(self, e: dict[str, Any], at: tuple[str | int, ...]) -> str | None:
        model = str(e["model"])
        try:
            ref = self.bind(model, _model_ref(str(e.get("model_type", "vllm")), model))
        except ValueError as err:
            self.problems.append(Problem((*at, "model_type"), str(err)))
            return None
        if ref.startswith("bedrock:") and ".anthropic." not in f".{ref[8:]}":
            self.notes.append(
                f"model {model}: Bedrock is reached through the anthropic SDK's Bedrock "
                "client, which serves Anthropic models only; rebind this one with "
                "--model-map"
            )
        name = _name(model, self.models, ref)
        self.models[name] = ref
        return name

    def pairrm(self, top_k: int | None, batch_size: int | None, where: str) -> dict[str, Any]:
        """PairRM's contract (scores in, top k out): a reward model at ``reward_url``, else
        a pairwise comparison judged by a chat model."""
        target = self.all_models or next(
            (r for pattern, r in self.model_map if fnmatch.fnmatchcase(PAIRRM, pattern)), None
        )
        if self.reward_url is not None:  # named explicitly: it wins over patterns
            params: dict[str, Any] = {"url": self.reward_url, "reward_model": PAIRRM}
            if top_k is not None:
                params["top_k"] = top_k
            if batch_size is not None:
                params["batch_size"] = batch_size
            self.notes.append(f"{where}: PairRM is the reward model at {self.reward_url}")
            return {"reward_rank": params}
        if target is not None:
            self.rebound[PAIRRM] = target
            name = _name("pairrm", self.models, target)
            self.models[name] = target
        else:
            name = "__judge__"  # resolved once every model is known
        self.notes.append(
            f"{where}: PairRM becomes a pairwise knockout judged by a chat model "
            f"({'the one --model-map gives' if target else 'the config’s own fuser/ranker'}); "
            "pass --reward-url to use a reward model server instead"
        )
        params = {"model": name, "mode": "pairwise", "temperature": 0.0}
        if top_k is not None:
            params["top_k"] = top_k
        return {"rank": params}

    def entry(self, e: Any, i: int, at: tuple[str | int, ...]) -> list[dict[str, Any]]:
        """Ponder components for one Archon entry (a fuser with ranker_config adds a rank
        step before its layer: returned under the key '__before__')."""
        if not isinstance(e, dict) or "type" not in e:
            self.problems.append(Problem(at, "each entry needs a 'type'"))
            return []
        kind = str(e["type"])
        if kind not in _COMPONENT:
            known = ", ".join(sorted(_COMPONENT))
            self.problems.append(
                Problem((*at, "type"), f"Archon type {kind!r} has no counterpart; known: {known}")
            )
            return []
        comp = _COMPONENT[kind]
        archon_keys = _KEYS[kind] | _IGNORED_KEYS | {"type", "model"}
        extra = sorted(set(e) - archon_keys)
        misspelt = False
        for key in extra:  # a near miss of a real key would silently lose its meaning
            close = difflib.get_close_matches(key, sorted(archon_keys), n=1, cutoff=0.75)
            if close:
                misspelt = True
                self.problems.append(
                    Problem((*at, key), f"unknown key {key!r}; did you mean {close[0]!r}?")
                )
        if misspelt:
            return []
        if extra:
            self.notes.append(
                f"layer {i + 1}, {kind}: ignored {', '.join(extra)} (not Archon keys)"
            )
        for key in e:
            if (kind, key) in _UNREAD:
                self.unread.add((kind, key))
        if kind == "ranker" and (e.get("model") == PAIRRM or e.get("model_type") == ""):
            top_k = e.get("top_k")
            size = e.get("ranker_batch_size")
            return [self.pairrm(top_k, size, f"layer {i + 1}, ranker")]
        if "model" not in e:
            self.problems.append(Problem((*at, "model"), f"an Archon {kind} needs a 'model'"))
            return []
        name = self.model_name(e, at)
        if name is None:
            return []
        if kind in ("fuser", "ranker", "critic") and self.judge is None:
            self.judge = name
        params: dict[str, Any] = {"model": name}
        if e.get("temperature") is not None:
            params["temperature"] = float(e["temperature"])
        if e.get("max_tokens") is not None:
            params["max_tokens"] = int(e["max_tokens"])
        samples = e.get("samples")
        out: list[dict[str, Any]] = []
        if kind == "generator":
            params["n"] = int(samples or 1)
            if e.get("no_system"):
                params["system"] = None
        elif kind == "ranker":
            if e.get("top_k") is not None:
                params["top_k"] = int(e["top_k"])
            if e.get("use_critiques"):
                params["use_critiques"] = True
            if e.get("ranker_batch_size") is not None:
                self.unread.add(("ranker", "ranker_batch_size (chat-model ranker)"))
        elif kind == "fuser":
            count = e.get("fuse_generations_count")
            params["n"] = int(samples if samples is not None else count or 1)
            if e.get("length_control"):
                params["length_control"] = True
            if e.get("top_k_generations") is not None:
                params["top_k"] = int(e["top_k_generations"])
            rc = e.get("ranker_config")
            if isinstance(rc, dict):
                model = rc.get("ranker_checkpoint", rc.get("model", PAIRRM))
                where = f"layer {i + 1}, fuser's ranker_config"
                if model != PAIRRM:
                    self.problems.append(
                        Problem((*at, "ranker_config"), f"ranker_config model {model!r}: only "
                                f"{PAIRRM} is known there")
                    )  # fmt: skip
                else:
                    out.append({"__before__": self.pairrm(None, rc.get("ranker_batch_size"),
                                                          where)})  # fmt: skip
        elif kind == "verifier":
            params["keep"] = "accepted"
            if e.get("first_k") is not None:
                params["first_k"] = int(e["first_k"])
        elif kind == "unit_test_generator":
            params["kind"] = "natural"  # Archon's tests are sentences, not code
            params["samples"] = int(samples or 1)
            if e.get("unit_test_cap") is not None:
                params["max_tests"] = int(e["unit_test_cap"])
        elif kind == "unit_test_evaluator":
            if e.get("top_k") is not None:
                params["top_k"] = int(e["top_k"])
            first_k = e.get("first_k")
            if first_k is None and e.get("first_pass"):
                first_k = 1
            if first_k is not None:
                params["first_k"] = int(first_k)
            if e.get("remove_unit_tests_from_prompt"):
                params["strip_tests_from_query"] = True
        if kind in ("critic", "verifier", "unit_test_evaluator", "ranker") and (samples or 1) > 1:
            self.notes.append(
                f"layer {i + 1}, {kind}: samples {samples} ignored (Archon reads its first)"
            )
        return [*out, {comp: params}]


def archon_to_spec(
    config: dict[str, Any],
    *,
    model_map: Sequence[tuple[str, str]] = (),
    all_models: str | None = None,
    reward_url: str | None = None,
    branches: Branches = "replicate",
) -> tuple[WorkflowSpec, list[str]]:
    """A Ponder workflow for an Archon config, and notes on what differs from Archon.

    ``model_map`` rebinds Archon's model names (glob patterns, first match wins) to model
    references; ``all_models`` points every component at one reference (run a published
    stack on the endpoint one has). ``reward_url`` serves Archon's PairRM ranker with a
    reward model there (vLLM's score API); without it PairRM becomes a pairwise knockout
    judged by a chat model. ``branches`` says what ``{"branches": k, "models": [...]}``
    means: the components run k times (``replicate``, what the published configs' names
    say) or once (``ignore``, what Archon's loader does). docs/workflows.md has the table.
    """
    imp = _Importer(config, model_map, all_models, reward_url, branches)
    layers_in = config.get("layers")
    if not isinstance(layers_in, list) or not layers_in:
        raise WorkflowError([Problem(("layers",), "an Archon config needs a list of layers")])
    layers: list[list[dict[str, Any]]] = []
    has_verifier = has_tests = False
    for i, layer in enumerate(layers_in):
        entries = _layer_entries(layer, i, branches, imp.notes, imp.problems)
        if entries is None:
            continue
        before: list[dict[str, Any]] = []
        out: list[dict[str, Any]] = []
        for j, e in enumerate(entries):
            for comp in imp.entry(e, i, ("layers", i, j)):
                if "__before__" in comp:
                    if not before:  # one ranking serves every fuser of the layer
                        before.append(comp["__before__"])
                    continue
                has_verifier = has_verifier or "verify" in comp
                has_tests = has_tests or "judge_tests" in comp
                out.append(comp)
        if before:
            layers.append(before)
        if out:
            layers.append(out)
    if imp.problems:
        raise WorkflowError(imp.problems, source="archon config")
    unused = [p for p, _ in model_map if not any(fnmatch.fnmatchcase(m, p) for m in imp.rebound)]
    if unused and all_models is None:
        raise WorkflowError(
            [Problem(("model_map",), f"--model-map {p}=...: no model of the config matches")
             for p in unused],
            source="archon config",
        )  # fmt: skip
    judge = imp.judge or next(iter(imp.models), None)
    for layer_out in layers:
        for comp in layer_out:
            for params in comp.values():
                if params.get("model") == "__judge__":
                    if judge is None:
                        raise WorkflowError(
                            [Problem(("layers",), "PairRM needs a chat model to judge: "
                                     "--model-map 'llm-blender/PairRM=REF' or --reward-url")],
                            source="archon config",
                        )  # fmt: skip
                    params["model"] = judge
    notes = imp.notes
    for model, target in sorted(imp.rebound.items()):
        notes.append(f"model {model} rebound to {target}")
    if imp.unread:
        keys = ", ".join(f"{k}.{key}" for k, key in sorted(imp.unread))
        notes.append(f"accepted with no effect, as Archon's code never reads them: {keys}")
    if has_verifier:
        notes.append(
            "verifiers check candidates in parallel (Archon: one after another); with "
            "first_k the checks still running are cancelled once the first k are accepted"
        )
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
        "a final best_of_n picks the best-scored answer (Archon picks one of its last "
        "layer's candidates at random)"
    )
    data = {
        "name": str(config.get("name", "archon-import")),
        "models": imp.models,
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
