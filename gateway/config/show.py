"""`gateway check --show`: the config as the gateway will run it (every `${...}` expanded,
every include merged), with secrets masked.

Masked: values read from secret files (`${file:...}`), values of keys that name a secret
(password, secret, token, authorization, api key, cookie...), and the password of any URL.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from gateway.config.loader import Loaded

MASK = "***"
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|authorization|api[-_]?key|cookie)", re.I)
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@", re.I)


def show(loaded: Loaded) -> str:
    """The resolved config as YAML, secrets masked."""
    masked = _mask(loaded.data, "", loaded.secrets)
    text: str = yaml.safe_dump(masked, sort_keys=False, allow_unicode=True, width=100)
    return text


def _mask(value: Any, key: str, secrets: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, str(k), secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key, secrets) for v in value]
    if isinstance(value, str):
        if value in secrets or (_SECRET_KEY.search(key) and value):
            return MASK
        return _URL_PASSWORD.sub(rf"\1:{MASK}@", value)
    return value
