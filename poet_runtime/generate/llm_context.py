"""How many tokens the model can take: asked once per server, so the prompt fits it.

A prompt larger than the model's context is refused by the server before any answer
(llama.cpp's default 2048 refused every request of the full prompt). The context is,
in order: ``POET_LLM_CONTEXT``; what an OpenAI-compatible local server says about
itself (llama.cpp's ``/props``: ``default_generation_settings.n_ctx``; ``/v1/models``
entries with ``meta.n_ctx_train``/``n_ctx``, ``context_length`` or ``max_model_len`` as
vLLM and others report); litellm's model list (``max_input_tokens``); else 2048, the
smallest a user meets in practice. Token counts are estimated from characters (no
tokenizer is loaded): a prompt is measured by the server's own count afterwards.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request

from poet_runtime.generate.llm_settings import FALLBACK_CONTEXT

log = logging.getLogger("poet_runtime")

CHARS_PER_TOKEN = 3.2  # code and English prose with small-model tokenizers; errs on the side of more tokens
_known: dict[tuple, tuple[int, str]] = {}
_lock = threading.Lock()


def estimate_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + 8


def context_size(model: str, api_base: str | None, configured: int | None, api_key: str | None = None,
                 timeout_s: float = 3.0) -> tuple[int, str]:
    """(tokens, where the number came from)."""
    if configured:
        return configured, "POET_LLM_CONTEXT"
    key = (model, api_base)
    with _lock:
        if key in _known:
            return _known[key]
    found = None
    if api_base:
        found = _ask_server(api_base, model, api_key, timeout_s)
    if found is None:
        found = _litellm_info(model)
    if found is None:
        found = (FALLBACK_CONTEXT, "assumed (set POET_LLM_CONTEXT)")
    with _lock:
        _known[key] = found
    return found


def forget() -> None:
    with _lock:
        _known.clear()


def _get(url: str, api_key: str | None, timeout_s: float):
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as response:
        return json.loads(response.read(1_000_000))


def _ask_server(api_base: str, model: str, api_key, timeout_s: float):
    base = api_base.rstrip("/")
    root = base[:-3] if base.endswith("/v1") else base
    try:
        props = _get(root + "/props", api_key, timeout_s)
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
        if isinstance(n_ctx, int) and n_ctx > 0:
            return n_ctx, f"{root}/props"
    except Exception:  # noqa: BLE001 - not every server has it
        pass
    try:
        listing = _get(base + "/models", api_key, timeout_s)
    except Exception:  # noqa: BLE001
        return None
    wanted = model.split("/", 1)[-1]
    entries = listing.get("data") or [] if isinstance(listing, dict) else []
    ranked = sorted(entries, key=lambda entry: (entry or {}).get("id") != wanted)
    for entry in ranked:
        if not isinstance(entry, dict):
            continue
        meta = entry.get("meta") or {}
        for value in (meta.get("n_ctx"), entry.get("context_length"), entry.get("max_model_len"),
                      meta.get("n_ctx_train"), entry.get("n_ctx")):
            if isinstance(value, int) and value > 0:
                return value, f"{base}/models"
    return None


def _litellm_info(model: str):
    try:
        from poet_runtime.generate.llm import _import_litellm

        info = _import_litellm().get_model_info(model)
    except Exception:  # noqa: BLE001 - an unknown model (every local one)
        return None
    value = info.get("max_input_tokens") or info.get("max_tokens")
    return (int(value), "litellm model info") if isinstance(value, int) and value > 0 else None
