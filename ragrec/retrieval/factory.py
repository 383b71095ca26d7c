"""Retrievers by their stable names: each name maps to its registered typed config, which builds
the retriever (as Hugging Face's ``AutoConfig.for_model`` and ``AutoModel.from_config``).

Importing this module registers the built-in retrievers: ``gcn``
(:class:`~ragrec.retrieval.gcn.GCNRetrieverConfig`), ``llm``
(:class:`~ragrec.retrieval.llm.LLMRetrieverConfig`), ``random`` and ``none``
(:mod:`ragrec.retrieval.simple`). A new retriever registers its config with
:func:`~ragrec.retrieval.base.register_retriever` in its own module and is imported here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ragrec.data import Dataset
from ragrec.errors import ConfigError

# importing the modules registers their retrievers
from ragrec.retrieval import gcn, llm, simple  # noqa: F401
from ragrec.retrieval.base import Retriever, RetrieverConfig, registered_retrievers


def retriever_names() -> tuple[str, ...]:
    """The names of every registered retriever, in registration order."""
    return tuple(registered_retrievers())


def retriever_class(name: str) -> type[RetrieverConfig]:
    """The config class registered as ``name``, or a ConfigError listing the names."""
    classes = registered_retrievers()
    if name not in classes:
        raise ConfigError(f"unknown retriever {name!r}; choose one of {tuple(classes)}")
    return classes[name]


def retriever_config(name: str, **values: Any) -> RetrieverConfig:
    """The config of retriever ``name`` with ``values`` for some fields, the module's defaults
    for the others; a field the config lacks is a ConfigError naming the ones it has."""
    config_class = retriever_class(name)
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"retriever {name!r} has no setting(s) {unknown}; it has {sorted(fields)}")
    return config_class(**values)


def make_retriever(
    config: RetrieverConfig | str,
    dataset: Dataset,
    *,
    backbone: Any = None,
    progress: bool = False,
    **values: Any,
) -> Retriever:
    """An unfitted retriever from its config, or from its name and settings.

    Args:
        config: a registered config, or a name for :func:`retriever_config`.
        dataset: gives the user and item counts, whether times are real, and item texts.
        backbone: a loaded backbone for retrievers that embed with an LLM. (default: the config's source)
        progress: a bar over a slow fit, where the retriever has one. (default: :obj:`False`)
        **values: settings, with a name only (e.g. ``make_retriever("gcn", ds, lightgcn=...)``).
    """
    if isinstance(config, str):
        config = retriever_config(config, **values)
    elif values:
        raise ConfigError(f"settings {sorted(values)} go into the config, not beside it")
    return config.build(dataset, backbone=backbone, progress=progress)
