"""The error to expect from the shipped predictor on one deployment, from its held-out scores.

A carbon figure is only as good as the predictor on the user's own model, GPU and serving stack, so
every predicted figure carries the error the predictor made on data it never saw that is most like
the deployment: the MAPE (mean absolute percentage error, J per output token) of the held-out group
that contains it, from the model file's ``info.heldout`` (written by ``llmco2 train`` or, from the
committed benchmark results, by ``tools/card_heldout.py``). The figure is the largest of:

* the model's own group: the architecture held out (``model=``), else its family (``family=``);
  for a quantised checkpoint the worse of that and its number format's group (``precision=``);
  a family the predictor never met takes the worst family group;
* for a GPU kind absent from the training data, the worst GPU hold-out (``gpu=``): the error on a
  GPU kind the predictor did not see;
* the leave-one-source-out error (the mean of the ``source:`` groups): the error when the serving
  stack (engine version, lab, workload) is not one of the training sources, which is every user's.

It is a typical error (a mean), not a bound: some requests are off by more. Measured records (NVML)
carry none.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: Hugging Face ``model_type`` of a mixture of experts -> its held-out family (a dense family's score
#: says nothing about its MoE relatives).
MOE_FAMILIES = {"qwen3_moe": "qwen3-moe", "qwen2_moe": "qwen2-moe", "gpt_oss": "gpt-oss", "deepseek_v3": "deepseek",
                "deepseek_v2": "deepseek", "llama4_text": "llama-4", "llama4": "llama-4", "mixtral": "mixtral"}


@dataclass(frozen=True)
class ExpectedError:
    """The typical relative error of a predicted figure and where it comes from.

    Attributes:
        mape_pct: held-out MAPE in percent (the largest of the groups below).
        groups: the held-out groups considered, e.g. ``("model=Qwen/Qwen3-8B", "source")``.
        basis: the group the figure is, in words (for logs and ``--help`` readers).
    """

    mape_pct: float
    groups: tuple[str, ...]
    basis: str

    def as_dict(self) -> dict:
        return {"mape_pct": round(self.mape_pct, 2), "groups": list(self.groups), "basis": self.basis}


def scores_from_info(info: dict) -> dict[str, float]:
    """``{split name: MAPE %}`` of the shipped recipe (predictor names ``llmco2-gnn...``) in a model
    file's ``info`` (its ``heldout`` rows; a string form is parsed too)."""
    rows = info.get("heldout", []) if isinstance(info, dict) else []
    if isinstance(rows, str):
        try:
            rows = ast.literal_eval(rows)
        except (ValueError, SyntaxError):
            return {}
    return {str(r["split"]): float(r["mape"]) for r in rows if isinstance(r, dict)
            and str(r.get("predictor", "")).startswith("llmco2-gnn") and "split" in r and "mape" in r}


@lru_cache(maxsize=8)
def scores_from_file(path: str) -> dict[str, float]:
    """:func:`scores_from_info` of a model file's JSON (``{}`` when unreadable)."""
    try:
        info = json.loads(Path(path).with_suffix(".json").read_text()).get("info", {})
    except (OSError, ValueError):
        return {}
    return scores_from_info(info)


#: the shipped model file (``predictor.gnn.DEFAULT_MODEL``; named here so that reading its scores needs no torch)
SHIPPED_MODEL = Path(__file__).with_name("weights") / "llmco2-gnn-v2.safetensors"
#: the shipped mixture-of-experts model (``predictor.gnn.DEFAULT_MOE_MODEL``; predictor/routed.py)
SHIPPED_MOE_MODEL = Path(__file__).with_name("weights") / "llmco2-gnn-moe-v1.safetensors"


def shipped_scores(moe: bool = False) -> dict[str, float]:
    """The held-out scores of the shipped model that serves dense models (``moe`` False) or mixtures of
    experts (the dense model's when no MoE model is shipped, as the router does)."""
    if moe and SHIPPED_MOE_MODEL.with_suffix(".json").exists():
        return scores_from_file(str(SHIPPED_MOE_MODEL))
    return scores_from_file(str(SHIPPED_MODEL))


def name_family(model_id: str) -> str:
    """The family of a model id as training groups it (``meta-llama/Llama-3.1-8B`` -> ``llama-3``)."""
    name = model_id.split("/")[-1].lower()
    if name.startswith("qwen3") and re.search(r"-a\d+b", name):
        return "qwen3-moe"
    for fam in ("gpt-oss", "deepseek", "llama-4"):
        if name.startswith(fam):
            return fam
    for fam in ("llama-3", "llama-2", "qwen3", "qwen2", "gemma", "mixtral", "mistral", "phi-3", "internlm"):
        if name.startswith(fam) or fam in name:
            return fam
    return name


def family_of(model) -> str:
    """A model's held-out family: MoE families by ``model_type``, dense ones by name (as in training)."""
    if model.is_moe:
        return MOE_FAMILIES.get(model.model_type, model.model_type)
    return name_family(model.name)


def model_score(held: dict[str, float], hf_id: str, base: str | None, family: str,
                quant_method: str | None = None) -> tuple[float | None, tuple[str, ...]]:
    """The most specific held-out score of a model and the groups it came from: the model itself (or
    the architecture it aliases), else its family, else the worst of its family's models held out one by
    one (a family in the training data through them, never held out whole); for a quantised model the
    worse of that and its number format's group (FP8 rows are harder than their family's bf16 ones: a
    figure should not flatter the model)."""
    key = next((k for k in (f"model={hf_id}", f"model={base}" if base else "", f"family={family}") if k in held), None)
    score, groups = (held[key], (key,)) if key else (None, ())
    if key is None:  # a new model of a family known through other models, none held out as a family: their
        siblings = {k: v for k, v in held.items() if k.startswith("model=") and _group_family(k) == family}
        if siblings:  # own hold-outs, the worst first (each had no sibling in training: a harder case)
            score, worst = _worst(siblings, "")
            groups = (worst,) + tuple(sorted(k for k in siblings if k != worst))
    fmt_key = f"precision={quant_method}" if quant_method else ""
    if fmt_key in held:
        groups += (fmt_key,)
        score = held[fmt_key] if score is None else max(score, held[fmt_key])
    return score, groups


def _worst(held: dict[str, float], prefix: str) -> tuple[float | None, str]:
    items = [(v, k) for k, v in held.items() if k.startswith(prefix)]
    return max(items) if items else (None, "")


def _group_family(key: str) -> str:
    kind, _, value = key.partition("=")
    return value if kind == "family" else name_family(value)


def gpu_group(gpu_name: str) -> str:
    """The training data's name of a catalog GPU's kind (``A100-SXM4-80GB`` -> ``A100``)."""
    return gpu_name.split("-")[0].split(" ")[0].upper()


def expected_error(model, gpu_name: str, held: dict[str, float] | None = None, hf_id: str | None = None,
                   base: str | None = None) -> ExpectedError | None:
    """The error to expect on ``model`` (a :class:`~llmco2_sidecar.models.spec.ModelSpec`) served on
    GPUs named ``gpu_name`` (see the module docstring); ``None`` when the predictor has no held-out
    scores (a model file trained with ``--no-heldout``, or another predictor)."""
    held = shipped_scores(model.is_moe) if held is None else held
    if not held:
        return None
    hf_id = hf_id or model.name
    candidates: list[tuple[float, str]] = []
    family = family_of(model)
    score, groups = model_score(held, hf_id, base, family, model.quant_method or None)
    own = (f"model={hf_id}", f"model={base}", f"family={family}")
    if score is not None and groups[0].startswith("model=") and groups[0] not in own:  # its family's other models
        candidates.append((score, f"a model not in the training data, of a family that is ({family}): "
                                  f"the worst hold-out of its models ({groups[0]})"))
    elif score is None:  # a family never seen: the worst hold-out of its kind (dense or MoE)
        moe = set(MOE_FAMILIES.values())
        kind = {k: v for k, v in held.items() if (k.startswith("family=") or k.startswith("model="))
                and (_group_family(k) in moe) == model.is_moe}
        score, key = _worst(kind, "")
        groups = (key,) if key else ()
        if score is not None:
            what = "mixture-of-experts" if model.is_moe else "dense"
            candidates.append((score, f"family never seen: the worst {what} hold-out ({key})"))
    else:
        candidates.append((score, f"its own hold-out ({', '.join(groups)})"))
    gkey = f"gpu={gpu_group(gpu_name)}"
    if gkey not in held:
        worst, key = _worst(held, "gpu=")
        if worst is not None:
            groups += (key,)
            candidates.append((worst, f"GPU kind not in the training data: the worst GPU hold-out ({key})"))
    src = [v for k, v in held.items() if k.startswith("source")]
    if src:
        groups += ("source",)
        candidates.append((sum(src) / len(src), "a serving stack other than the training sources (leave-one-source-out)"))
    if not candidates:
        return None
    mape, basis = max(candidates)
    return ExpectedError(float(mape), groups, basis)


def expected_error_for(predictor, deployment, model_id: str | None = None) -> ExpectedError | None:
    """:func:`expected_error` of the model of ``predictor`` that answers for ``deployment`` (a
    :class:`~.api.Deployment`), from that model's own held-out scores; None when it has none."""
    held = predictor.heldout_scores(deployment)
    return expected_error(deployment.model, deployment.gpu.gpu_id, held, hf_id=model_id or None) if held else None
