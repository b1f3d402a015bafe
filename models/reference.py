"""Reference outputs of the shipped models from Python onnxruntime, for the worker's parity tests
(which then need no Python): models/scorer/reference.json and models/tiny-generative/reference.json.

    py=$(scripts/ensure-python-ref) && "$py" models/reference.py

Scorer: the scores of fixed texts of 512, 2048 and 8192 tokens, of one longer than the context
(8192 tokens; its beginning is dropped), and of two held-out trajectories (examples.json) as the chat template renders them. Each text is stored
with its token count and first/last ids, so a tokenizer difference shows as such.
Generative: prompts (messages), their rendering by the chat template, and the first 24 greedy
tokens (with the cache, one prompt at a time).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import make_tiny_generative as tiny  # noqa: E402

SCORER = common.MODELS / "scorer"
GENERATIVE = common.MODELS / "tiny-generative"


def text_of_tokens(tok, text: str, n: int) -> str:
    """The shortest tail of `text` that tokenizes to exactly n tokens."""
    enc = tok.encode(text, add_special_tokens=False)
    assert len(enc.ids) >= n
    i = len(enc.ids) - n
    while i >= 0:
        tail = text[enc.offsets[i][0] :]
        if len(tok.encode(tail, add_special_tokens=False).ids) == n:
            return tail
        i -= 1
    raise RuntimeError(f"no tail of {n} tokens")


def scorer() -> None:
    config = common.read_config(SCORER)
    tok = common.load_tokenizer(SCORER, config)
    sess = common.session(SCORER / "model.onnx")
    context = config["context_length"]
    examples = json.loads((SCORER / "examples.json").read_text())["examples"]
    rendered = [common.render(SCORER, config, e["messages"]) for e in examples]
    long_text = ""
    for r in rendered * 3:
        long_text += r
        if len(tok.encode(long_text, add_special_tokens=False).ids) > context + 2000:
            break
    cases = [
        ("heldout-productive", rendered[0]),
        ("heldout-looping", rendered[1]),
        ("tokens-512", text_of_tokens(tok, long_text, 512)),
        ("tokens-2048", text_of_tokens(tok, long_text, 2048)),
        ("tokens-8192", text_of_tokens(tok, long_text, 8192)),
        ("longer-than-context", long_text),
    ]
    out = []
    for name, text in cases:
        ids = common.encode(tok, text, context)
        logit = sess.run(["logits"], {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)})[0][0, 0]
        out.append({
            "name": name,
            "text": text,
            "input_tokens": len(ids),
            "text_tokens": len(tok.encode(text, add_special_tokens=False).ids),
            "first_ids": ids[:8],
            "last_ids": ids[-8:],
            "logit": float(logit),
            "on_track": float(1 / (1 + np.exp(-np.float64(logit)))),
        })
        print(f"scorer {name}: {len(ids)} tokens, on_track {out[-1]['on_track']:.6f}", file=sys.stderr)
    common.dump_json(SCORER / "reference.json", {
        "what": "scores of fixed texts by Python onnxruntime " + onnxruntime.__version__ + " (models/reference.py)",
        "context_length": context,
        "cases": out,
    })


def generative() -> None:
    config = common.read_config(GENERATIVE)
    tok = common.load_tokenizer(GENERATIVE, config)
    sess = common.session(GENERATIVE / "model.onnx")
    examples = json.loads((SCORER / "examples.json").read_text())["examples"]
    prompts = [
        [{"role": "user", "content": "Hello! Is the agent on track?"}],
        [{"role": "system", "content": "You are a critic of a code agent."},
         {"role": "user", "content": "The agent ran `ls` five times in a row. What should it do?"}],
        examples[0]["messages"][:4],
    ]
    new_tokens = 24
    out = []
    for messages in prompts:
        text = common.render(GENERATIVE, config, messages)
        ids = common.encode(tok, text, config["context_length"])
        tokens = tiny.generate(sess, [ids], new_tokens)[0]
        out.append({
            "messages": messages,
            "prompt": text,
            "input_tokens": len(ids),
            "first_ids": ids[:8],
            "greedy_tokens": tokens,
            "greedy_text": tok.decode(tokens, skip_special_tokens=True),
        })
        print(f"generative: {len(ids)} prompt tokens -> {tokens}", file=sys.stderr)
    common.dump_json(GENERATIVE / "reference.json", {
        "what": "greedy tokens of the tiny random model by Python onnxruntime " + onnxruntime.__version__
                + " (models/reference.py); the text is meaningless",
        "max_new_tokens": new_tokens,
        "eos_token_ids": config["eos_token_ids"],
        "cases": out,
    })


if __name__ == "__main__":
    scorer()
    generative()
