"""Tokenizers: a byte-level BPE trained on the task's own text, or a pretrained one.

Models built from config get a tokenizer trained on the task's train split, so a 1M-parameter
student does not spend most of its weights on a 50k-token embedding. Byte-level BPE makes
``decode(encode(x)) == x`` for every string, so ROUGE and PII matching see exactly what the model
wrote. Trained (and GGUF-converted) tokenizers are cached, content-addressed, like every stage.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from plad.cache import atomic_dir, content_key, entry_dir, fingerprint, is_complete, stage_key
from plad.checks import InputError
from plad.models.encoding import CHAT_TEMPLATE_FLAG, check_chat_template

log = logging.getLogger("plad")
PKG_PREFIX = "pkg://"
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte plus the special tokens


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Stable across processes: the serialized fast tokenizer, else datasets' pickle hash. Equal
    fingerprints encode every text to the same ids (token ids of one can be scored by the other)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()
    else:
        from datasets.fingerprint import Hasher

        body = Hasher.hash(tokenizer)
    return fingerprint(
        type(tokenizer).__name__, body, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    )


def resolve_pretrained(name: str | None, field: str = "pretrained") -> str | None:
    """``pkg://<python package>[/sub/dir]`` -> that installed package's directory; anything else as is.

    Lets a config point at weights shipped inside a pip package without naming a machine path.
    The package is located without importing it (its own imports may be missing).
    """
    if name is None or not str(name).startswith(PKG_PREFIX):
        return None if name is None else os.path.expanduser(str(name))
    package, _, sub = str(name)[len(PKG_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{field}: expected an installed Python package after {PKG_PREFIX}, got {name!r}")
    return str(Path(list(spec.submodule_search_locations)[0]) / sub)


def source_key(pretrained: str | None, gguf_file: str | None = None) -> dict[str, Any] | None:
    """What the weights or tokenizer named by ``pretrained`` (+ ``gguf_file``) are, for cache keys:
    the content of a local directory or file (``plad.cache.content_key``), so replacing the weights
    behind a path rebuilds what depends on them; for a hub name, the revision of its local snapshot
    when one is known, else the name alone (and the run log says so)."""
    if not pretrained:
        return None
    path = Path(resolve_pretrained(pretrained))
    target = path / gguf_file if gguf_file else path
    if target.exists():
        return {"content": content_key(target)}
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(str(pretrained), gguf_file or "config.json")
    except Exception:  # noqa: BLE001 - a name the hub client cannot parse: keyed by the name
        found = None
    if isinstance(found, str):
        return {"revision": Path(found).parent.name}
    log.info("cache: %s is keyed by its name only (no local snapshot revision known)", pretrained)
    return {"name": str(pretrained)}


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with <pad>, <s>, </s>, <unk> (ids 0-3); pad != eos so padding is never scored."""
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise InputError(
            f"tokenizer.vocab_size: expected an integer >= {MIN_VOCAB} "
            f"(256 bytes + 4 special tokens), got {vocab_size!r}"
        )
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, even unseen ones
        show_progress=True,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS)


def ensure_pad(tokenizer: Any) -> Any:
    """Give a tokenizer a pad token (its EOS when it has none); the collator's labels keep EOS scored."""
    if tokenizer.eos_token_id is None:
        raise InputError(f"tokenizer: expected an eos_token, got none in {type(tokenizer).__name__}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def set_prompt_format(tokenizer: Any, chat_template: str) -> bool:
    """Record on ``tokenizer`` whether ``encode_prompt`` wraps prompts with its chat template
    (``auto``: when it has one; a BPE trained here has none). The flag lives in ``init_kwargs``,
    so ``save_pretrained`` writes it to tokenizer_config.json and every stage that loads the saved
    model encodes prompts as its SFT did. Returns whether the template applies."""
    applied = check_chat_template(chat_template) == "auto" and bool(getattr(tokenizer, "chat_template", None))
    tokenizer.init_kwargs[CHAT_TEMPLATE_FLAG] = applied
    return applied


def load_tokenizer(pretrained: str, gguf_file: str | None = None) -> Any:
    """A hub name, a local dir, ``pkg://...``, or a GGUF file inside one of those."""
    path = resolve_pretrained(pretrained)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    return ensure_pad(AutoTokenizer.from_pretrained(path, **kwargs))


def obtain_tokenizer(
    spec_tokenizer: DictConfig, texts: Callable[[], Iterable[str]], data_fp: str, cache_root: str | os.PathLike
) -> Any:
    """The family's tokenizer: ``pretrained`` if set, else BPE trained on ``texts()`` and cached.

    ``texts`` is a thunk so a cache hit never touches the data. Converting a GGUF vocabulary takes
    seconds, so that result is cached too (keyed by the config strings, not the machine path).
    """
    pretrained, gguf_file = spec_tokenizer.get("pretrained"), spec_tokenizer.get("gguf_file")
    if pretrained and not gguf_file:
        return load_tokenizer(pretrained)
    if pretrained:
        fp = stage_key("tokenizers", "gguf", str(pretrained), gguf_file, source_key(pretrained, gguf_file))
    else:
        fp = stage_key("tokenizers", spec_tokenizer.get("vocab_size"), data_fp)
    final = entry_dir(cache_root, "tokenizers", fp)
    if not is_complete(final):
        tok = (
            load_tokenizer(pretrained, gguf_file)
            if pretrained
            else train_tokenizer(texts(), spec_tokenizer.get("vocab_size"))
        )
        with atomic_dir(final) as tmp:
            tok.save_pretrained(tmp)
    return ensure_pad(AutoTokenizer.from_pretrained(str(final)))
