"""Input domains: one module per modality turns a file's bytes into model inputs.

A model card names its domain (``card["domain"]``); ``get_domain`` finds the module that reads it.
Shipped domains are imported only when used (the CLI and the Studio start fast); another one is
added with ``register_domain`` -- a new modality is one module defining a ``Domain`` subclass plus
a model card that names it (see the README's "Add a modality").
"""
from __future__ import annotations

import importlib

from fineprune.domains.base import Decoded, Domain, LoadedInputs, label_from_name
from fineprune.errors import UnknownModelError

# domain name -> module defining ``DOMAIN`` (imported on first use)
SHIPPED_DOMAINS: dict[str, str] = {
    "generic": "fineprune.domains.generic",
    "voice": "fineprune.domains.voice",
    "face": "fineprune.domains.face",
    "objects": "fineprune.domains.objects",
    "image": "fineprune.domains.imagenet",
}
_REGISTERED: dict[str, Domain] = {}


def register_domain(domain: Domain) -> Domain:
    """Make ``get_domain(domain.name)`` return ``domain`` (a new modality, or a test's stand-in)."""
    if not domain.name:
        raise ValueError("a domain needs a name")
    _REGISTERED[domain.name] = domain
    return domain


def get_domain(name: str) -> Domain:
    if name not in _REGISTERED:
        if name not in SHIPPED_DOMAINS:
            raise UnknownModelError(f"no input pipeline for domain {name!r}; known: {sorted({*SHIPPED_DOMAINS, *_REGISTERED})}")
        register_domain(importlib.import_module(SHIPPED_DOMAINS[name]).DOMAIN)
    return _REGISTERED[name]


__all__ = ["Decoded", "Domain", "LoadedInputs", "SHIPPED_DOMAINS", "get_domain", "label_from_name", "register_domain"]
