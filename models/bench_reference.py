"""The Python side of `steer bench critic`: latency of one call through Python onnxruntime on the
same model and the same texts, for comparison with the worker's.

Reads a JSON request on stdin and prints one JSON object on stdout:

    {"model": DIR, "texts": {"512": TEXT, ...}, "runs": 20, "warmup": 2, "new_tokens": 16, "threads": 0}
 -> {"onnxruntime": VERSION, "latency_ms": {"512": {"median": .., "p99": .., "tokenize_median": ..,
                                                   "input_tokens": ..}, ...}}

A call is what the worker's call does: tokenize (with the worker's truncation rule), then run the
model: a scorer once; a generative model's prefill and `new_tokens` greedy steps with the cache.
Run it with the venv of scripts/ensure-python-ref.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[round((len(values) - 1) * p)]


class Scorer:
    def __init__(self, sess, config):
        self.sess = sess
        inputs = {i.name for i in sess.get_inputs()}
        self.positions = "position_ids" in inputs
        self.output = config.get("outputs", {}).get("score", "logits")
        if self.output not in {o.name for o in sess.get_outputs()}:
            self.output = sess.get_outputs()[0].name

    def __call__(self, ids):
        feeds = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        if self.positions:
            feeds["position_ids"] = np.arange(len(ids), dtype=np.int64)[None]
        return self.sess.run([self.output], feeds)


class Generator:
    def __init__(self, sess, config, new_tokens):
        self.sess = sess
        self.new_tokens = new_tokens
        self.past = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
        self.outputs = [o.name for o in sess.get_outputs()]

    def __call__(self, ids):
        past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in self.past}
        feed_ids, start = list(ids), 0
        for _ in range(self.new_tokens):
            n = len(feed_ids)
            res = dict(zip(self.outputs, self.sess.run(None, {
                "input_ids": np.array([feed_ids], np.int64),
                "attention_mask": np.ones((1, start + n), np.int64),
                "position_ids": np.arange(start, start + n, dtype=np.int64)[None],
                **past,
            })))
            nxt = int(np.argmax(res["logits"][0, -1]))
            past = {k: res[k.replace("past_key_values.", "present.")] for k in past}
            start += n
            feed_ids = [nxt]


def main() -> None:
    request = json.load(sys.stdin)
    model_dir = Path(request["model"])
    config = common.read_config(model_dir)
    tok = common.load_tokenizer(model_dir, config)
    sess = common.session(model_dir / config.get("model", "model.onnx"), request.get("threads", 0))
    new_tokens = request.get("new_tokens", 16)
    if config["form"] == "scorer":
        run, limit = Scorer(sess, config), config["context_length"]
    else:
        run, limit = Generator(sess, config, new_tokens), config["context_length"] - new_tokens
    keep = config.get("keep_start_tokens", 0)
    out = {}
    for length, text in request["texts"].items():
        totals, tokenizing = [], []
        for i in range(request.get("warmup", 2) + request["runs"]):
            started = time.perf_counter()
            ids = common.encode(tok, text, limit, keep)
            tokenized = time.perf_counter()
            run(ids)
            done = time.perf_counter()
            if i >= request.get("warmup", 2):
                totals.append((done - started) * 1000)
                tokenizing.append((tokenized - started) * 1000)
        out[length] = {
            "median": round(percentile(totals, 0.5), 3),
            "p99": round(percentile(totals, 0.99), 3),
            "tokenize_median": round(percentile(tokenizing, 0.5), 3),
            "input_tokens": len(ids),
        }
    print(json.dumps({"onnxruntime": onnxruntime.__version__, "latency_ms": out}))


if __name__ == "__main__":
    main()
