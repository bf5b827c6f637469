"""Running a workflow on the models one has: rebinding its model names to references."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from ponder.backends import ModelRef
from ponder.errors import ConfigurationError
from ponder.workflows._spec import WorkflowSpec

__all__ = ["parse_bindings", "rebind"]


def parse_bindings(items: Sequence[str], what: str = "--model") -> list[tuple[str, str]]:
    """``["PATTERN=REF", ...]`` -> ``[(PATTERN, REF)]``; each REF checked against the
    model-string grammar."""
    out = []
    for item in items:
        pattern, sep, ref = item.partition("=")
        if not sep or not pattern.strip() or not ref.strip():
            raise ConfigurationError(
                f"{what} {item!r}: write NAME=REF, e.g. 'gen*=vllm:Qwen/Qwen2.5-7B@http://h:8000/v1'"
            )
        ModelRef.parse(ref.strip())
        out.append((pattern.strip(), ref.strip()))
    return out


def rebind(
    spec: WorkflowSpec, bindings: Sequence[tuple[str, str]] | Mapping[str, str]
) -> WorkflowSpec:
    """``spec`` with the references of its models replaced: each (glob PATTERN, REF) sets
    every model whose name matches; the first matching pattern wins. A pattern that
    matches no model is an error naming the models there are."""
    pairs = list(bindings.items()) if isinstance(bindings, Mapping) else list(bindings)
    if not pairs:
        return spec
    models = dict(spec.models)
    for pattern, _ref in pairs:
        if not fnmatch.filter(models, pattern):
            known = ", ".join(sorted(models)) or "none"
            raise ConfigurationError(
                f"--model {pattern}=...: no model of workflow {spec.name!r} is named like "
                f"that (its models: {known})"
            )
    for name, m in models.items():
        for pattern, ref in pairs:
            if fnmatch.fnmatchcase(name, pattern):
                models[name] = m.model_copy(update={"ref": ref})
                break
    return spec.model_copy(update={"models": models})
