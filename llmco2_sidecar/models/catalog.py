"""The model catalog: bundled Hugging Face configs (architecture facts only) addressed by their Hub
ids, or any ``config.json`` file or folder given by path.

Bit widths default to the 16-bit serving precision; ``load_model(..., weight_bits=8)`` etc. change them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import InputError
from .spec import ModelSpec

CONFIG_DIR = Path(__file__).with_name("configs")


def _id_to_file(hf_id: str) -> Path:
    return CONFIG_DIR / (hf_id.replace("/", "__") + ".json")


@functools.lru_cache(maxsize=1)
def _aliases() -> dict[str, dict]:
    """Alias id -> ``{"base": bundled id, "quant_method"?, "weight_block_size"?, "verified"?, "note"?}`` (a plain string value
    is the base id of a same-architecture fine-tune)."""
    data = json.loads((CONFIG_DIR / "_aliases.json").read_text())
    return {k: (v if isinstance(v, dict) else {"base": v}) for k, v in data.items() if not k.startswith("_")}


def list_aliases() -> dict[str, dict]:
    """Alias ids (fine-tunes, FP8 releases) and what they resolve to."""
    return dict(_aliases())


def list_models() -> list[str]:
    """Hugging Face ids of the bundled configs (not counting aliases)."""
    return sorted(p.stem.replace("__", "/", 1) for p in CONFIG_DIR.glob("*.json") if not p.name.startswith("_"))


def bundled_status() -> dict[str, bool]:
    """Bundled id -> verified (checked in two or more public copies)."""
    out = {}
    for hf_id in list_models():
        cfg = json.loads(_id_to_file(hf_id).read_text())
        out[hf_id] = bool(cfg.get("_llmco2", {}).get("verified", True))
    return out


def _read_json(path: Path, field: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(field, f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except OSError as exc:
        raise InputError(field, f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise InputError(field, f"{path} does not hold a JSON object")
    return data


def load_model(name_or_path: str, weight_bits: int | None = None, act_bits: int | None = None,
               kv_bits: int | None = None) -> ModelSpec:
    """A bundled Hugging Face id (``meta-llama/Llama-2-7b-hf``; case-insensitive; Instruct variants via
    aliases) or a path to a ``config.json`` or the folder holding one."""
    spec = _load(str(name_or_path))
    for name, bits in (("weight-bits", weight_bits), ("act-bits", act_bits), ("kv-bits", kv_bits)):
        if bits is not None and bits not in (4, 8, 16, 32):
            raise InputError(name, f"unsupported bit width {bits}", "4, 8, 16, 32")
    if weight_bits or act_bits or kv_bits:
        spec = spec.with_bits(weight_bits, act_bits, kv_bits)
    return spec


def _suggestion(name: str, known: list[str]) -> str:
    """What to tell a user whose model id is not bundled: the closest bundled ids or aliases, and for
    a quantised release of a bundled architecture (``...-FP8``, ``...-AWQ``) how to give its own config."""
    import difflib

    low = {k.lower(): k for k in known}
    close = [low[k] for k in difflib.get_close_matches(name.lower(), list(low), n=3, cutoff=0.75)]
    out = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    stem = name.lower()
    for tag in ("-fp8-dynamic", "-fp8", "-awq", "-gptq-int4", "-gptq-int8", "-gptq", "-int4", "-int8", "-mxfp4"):
        if stem.endswith(tag) and stem[:-len(tag)] in low:
            out += (f"; {name!r} looks like a quantised release of {low[stem[:-len(tag)]]!r}: pass the folder "
                    "holding its config.json (its quantization_config sets the number format) with --model PATH")
            break
    return out


@functools.lru_cache(maxsize=64)
def _load(name: str) -> ModelSpec:
    if not name:
        raise InputError("model", "missing", "a bundled Hugging Face id or a path to config.json")
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise InputError("model", f"{name} has no config.json")
    if path.suffix == ".json" and path.is_file():
        return ModelSpec.from_hf_config(_read_json(path, "model"), name=str(path.parent.name if path.name == "config.json" else path.stem),
                                        source=str(path))
    ids = {i.lower(): i for i in list_models()}
    aliases = {k.lower(): (k, v) for k, v in _aliases().items()}
    key = name.lower()
    alias = None
    hf_id = ids.get(key)
    if hf_id is None and key in aliases:
        alias_id, alias = aliases[key]
        hf_id = alias["base"]
    if hf_id is None:
        raise InputError("model", f"unknown model {name!r} (not bundled and not a path to a config.json)"
                         + _suggestion(name, list(ids.values()) + [k for k, _ in aliases.values()]),
                         ", ".join(list_models()))
    cfg = _read_json(_id_to_file(hf_id), "model")
    meta = cfg.pop("_llmco2", {})
    verified = bool(meta.get("verified", True))
    source = meta.get("note", "bundled config, checked in >= 2 public copies (configs/SOURCE.md)")
    if alias is None or set(alias) == {"base"}:  # plain aliases (fine-tunes) keep the base id as name
        return ModelSpec.from_hf_config(cfg, name=hf_id, verified=verified, source=source)
    if alias.get("quant_method"):
        cfg["quantization_config"] = {"quant_method": alias["quant_method"], "activation_scheme": "dynamic"}
        if alias.get("weight_block_size"):
            cfg["quantization_config"]["weight_block_size"] = list(alias["weight_block_size"])
    verified = verified and bool(alias.get("verified", True))
    source = f"{hf_id} architecture" + (f"; {alias['note']}" if alias.get("note") else "") + f" ({source})"
    return ModelSpec.from_hf_config(cfg, name=alias_id, verified=verified, source=source)
