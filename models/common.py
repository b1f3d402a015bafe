"""What the model-making, reference and benchmark scripts share: reading a model directory's
critic.toml, rendering its chat template the way Hugging Face does (and the worker does), and
tokenizing with the worker's truncation rule. Run with the venv of scripts/ensure-python-ref."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

MODELS = Path(__file__).resolve().parent


def read_config(model_dir: Path) -> dict:
    return tomllib.loads((model_dir / "critic.toml").read_text())


def chat_template(model_dir: Path, config: dict) -> str:
    if "chat_template" in config:
        return config["chat_template"]
    return (model_dir / config["chat_template_file"]).read_text()


def render(model_dir: Path, config: dict, messages: list[dict], add_generation_prompt: bool | None = None) -> str:
    """As transformers' `apply_chat_template`: jinja2 with trim_blocks and lstrip_blocks."""
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(chat_template(model_dir, config))
    if add_generation_prompt is None:
        add_generation_prompt = config.get("add_generation_prompt", config["form"] == "generative")
    return template.render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=config.get("bos_token", ""),
        eos_token=config.get("eos_token", ""),
    )


def load_tokenizer(model_dir: Path, config: dict):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / config.get("tokenizer", "tokenizer.json")))


def encode(tokenizer, text: str, max_tokens: int, keep_start: int = 0) -> list[int]:
    """The worker's rule: encode without special tokens; if too long, keep the first `keep_start`
    tokens and the last ones (left truncation); then add the post-processor's special tokens."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    ids = enc.ids
    budget = max_tokens - tokenizer.num_special_tokens_to_add(False)
    if len(ids) > budget:
        ids = ids[:keep_start] + ids[len(ids) - (budget - keep_start) :]
    # The shipped tokenizers have no post-processor (no special tokens added around the text).
    assert tokenizer.post_processor is None, "a post-processor is not handled by these scripts"
    return ids


def session(model_path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def dump_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
