"""Makes models/scorer/: a byte-level BPE tokenizer and a small scorer trained on SYNTHETIC
trajectories of the fixture tasks (models/synthetic.py), exported to ONNX.

    py=$(scripts/ensure-python-ref) && "$py" models/make_scorer.py

Writes scorer/tokenizer.json, scorer/model.onnx, scorer/training.json (data sizes, accuracy on
the held-out tasks) and scorer/examples.json (held-out trajectories for the worker's tests).
critic.toml is written by hand; its chat template is read from it. Seeds are fixed: a rerun
writes the same files.

The model: token embeddings (dim 32), masked mean over the whole input and over its last 512
tokens (the end of a trajectory matters most), concatenated, a tanh layer of 32, one logit.
Trained in numpy (full-batch Adam on the logistic loss with L2), exported with onnx.helper:
inputs `input_ids`, `attention_mask` (int64 [batch, sequence]), output `logits` (float [batch, 1]).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import synthetic  # noqa: E402

OUT = common.MODELS / "scorer"
VOCAB = 4096
DIM = 32
HIDDEN = 32
TAIL = 512
PER_TASK = 300
STEPS = 600
SPECIAL = ["<pad>", "<|system|>", "<|user|>", "<|assistant|>"]


def train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def features(ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised token counts over the whole input and over its last TAIL tokens."""
    arr = np.asarray(ids, dtype=np.int64)
    full = np.bincount(arr, minlength=VOCAB).astype(np.float64) / max(len(arr), 1)
    tail = arr[-TAIL:]
    last = np.bincount(tail, minlength=VOCAB).astype(np.float64) / max(len(tail), 1)
    return full, last


class Model:
    def __init__(self, rng: np.random.Generator):
        self.E = rng.normal(0, 0.1, (VOCAB, DIM))
        self.W1 = rng.normal(0, 1 / np.sqrt(2 * DIM), (2 * DIM, HIDDEN))
        self.b1 = np.zeros(HIDDEN)
        self.w2 = rng.normal(0, 1 / np.sqrt(HIDDEN), (HIDDEN, 1))
        self.b2 = np.zeros(1)

    def params(self):
        return [self.E, self.W1, self.b1, self.w2, self.b2]

    def forward(self, full, last):
        x = np.concatenate([full @ self.E, last @ self.E], axis=1)
        h = np.tanh(x @ self.W1 + self.b1)
        return (h @ self.w2 + self.b2)[:, 0], (x, h)

    def grads(self, full, last, y, l2):
        logit, (x, h) = self.forward(full, last)
        p = 1 / (1 + np.exp(-logit))
        n = len(y)
        d = ((p - y) / n)[:, None]
        gw2 = h.T @ d + l2 * self.w2
        gb2 = d.sum(0)
        dh = (d @ self.w2.T) * (1 - h**2)
        gW1 = x.T @ dh + l2 * self.W1
        gb1 = dh.sum(0)
        dx = dh @ self.W1.T
        gE = full.T @ dx[:, :DIM] + last.T @ dx[:, DIM:] + l2 * self.E
        loss = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
        return loss, [gE, gW1, gb1, gw2, gb2]


def train(full, last, y) -> Model:
    rng = np.random.default_rng(0)
    model = Model(rng)
    params = model.params()
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, b1, b2, eps = 0.02, 0.9, 0.999, 1e-8
    for t in range(1, STEPS + 1):
        loss, grads = model.grads(full, last, y, l2=1e-4)
        for i, (p, g) in enumerate(zip(params, grads)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            p -= lr * (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + eps)
        if t % 100 == 0:
            print(f"step {t}: loss {loss:.4f}", file=sys.stderr)
    return model


def export(model: Model, path: Path) -> None:
    def init(name, a, dtype=np.float32):
        t = numpy_helper.from_array(np.asarray(a, dtype=dtype))
        t.name = name
        return t

    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["emb"]),  # [B, S, D]
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),  # [B, S]
        helper.make_node("ReduceSum", ["maskf", "axis1"], ["len"], keepdims=1),  # [B, 1]
        helper.make_node("CumSum", ["maskf", "axis1_scalar"], ["pos"]),  # [B, S]: 1-based among real tokens
        helper.make_node("Sub", ["len", "tail"], ["tail_start"]),
        helper.make_node("Greater", ["pos", "tail_start"], ["in_tail"]),
        helper.make_node("Cast", ["in_tail"], ["in_tailf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["in_tailf", "maskf"], ["tailw"]),
        helper.make_node("ReduceSum", ["tailw", "axis1"], ["tail_len"], keepdims=1),
        # Masked means: [B, 1, S] x [B, S, D] -> [B, 1, D] -> [B, D], divided by the counts.
        helper.make_node("Unsqueeze", ["maskf", "axis1"], ["mask3"]),
        helper.make_node("MatMul", ["mask3", "emb"], ["sum_all3"]),
        helper.make_node("Squeeze", ["sum_all3", "axis1"], ["sum_all"]),
        helper.make_node("Max", ["len", "one"], ["len1"]),
        helper.make_node("Div", ["sum_all", "len1"], ["mean_all"]),
        helper.make_node("Unsqueeze", ["tailw", "axis1"], ["tail3"]),
        helper.make_node("MatMul", ["tail3", "emb"], ["sum_tail3"]),
        helper.make_node("Squeeze", ["sum_tail3", "axis1"], ["sum_tail"]),
        helper.make_node("Max", ["tail_len", "one"], ["tail_len1"]),
        helper.make_node("Div", ["sum_tail", "tail_len1"], ["mean_tail"]),
        helper.make_node("Concat", ["mean_all", "mean_tail"], ["x"], axis=1),  # [B, 2D]
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["logits"]),  # [B, 1]
    ]
    inits = [
        init("E", model.E), init("W1", model.W1), init("b1", model.b1), init("w2", model.w2), init("b2", model.b2),
        init("axis1", [1], np.int64), init("axis1_scalar", 1, np.int64), init("tail", [float(TAIL)]),
        init("one", [1.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "steerbench_scorer",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="steerbench models/make_scorer.py",
        ir_version=8,
    )
    onnx_model.doc_string = "SYNTHETIC on-track scorer: trained on made-up trajectories of steerbench's fixture tasks"
    onnx.checker.check_model(onnx_model, full_check=True)
    path.write_bytes(onnx_model.SerializeToString())


def main() -> None:
    config = common.read_config(OUT)
    tasks = synthetic.load_tasks()
    examples = synthetic.make_examples(tasks, PER_TASK)
    for e in examples:
        e["text"] = common.render(OUT, config, e["messages"])
    train_ex = [e for e in examples if e["task"] not in synthetic.HELD_OUT_TASKS]
    test_ex = [e for e in examples if e["task"] in synthetic.HELD_OUT_TASKS]
    print(f"{len(train_ex)} training and {len(test_ex)} held-out trajectories", file=sys.stderr)

    tok = train_tokenizer([e["text"] for e in train_ex])
    context = config["context_length"]

    def feats(exs):
        encs = tok.encode_batch([e["text"] for e in exs], add_special_tokens=False)
        for e, enc in zip(exs, encs):
            e["tokens"] = len(enc.ids)
        fl = [features(enc.ids[-context:]) for enc in encs]
        return np.stack([f[0] for f in fl]), np.stack([f[1] for f in fl]), np.array([e["label"] for e in exs], float)

    tr_full, tr_last, tr_y = feats(train_ex)
    te_full, te_last, te_y = feats(test_ex)
    model = train(tr_full, tr_last, tr_y)

    def accuracy(full, last, y, exs):
        logit, _ = model.forward(full, last)
        pred = (logit > 0).astype(float)
        by_family = {}
        for e, p, t in zip(exs, pred, y):
            by_family.setdefault(e["family"], []).append(p == t)
        return float((pred == y).mean()), {k: round(float(np.mean(v)), 4) for k, v in sorted(by_family.items())}

    train_acc, _ = accuracy(tr_full, tr_last, tr_y, train_ex)
    test_acc, test_by_family = accuracy(te_full, te_last, te_y, test_ex)
    print(f"train accuracy {train_acc:.4f}, held-out accuracy {test_acc:.4f} {test_by_family}", file=sys.stderr)

    OUT.mkdir(exist_ok=True)
    tok.save(str(OUT / "tokenizer.json"))
    export(model, OUT / "model.onnx")

    # The ONNX model computes what numpy trained (float32 against float64: close, not equal).
    sess = common.session(OUT / "model.onnx")
    tok = common.load_tokenizer(OUT, config)
    worst = 0.0
    for e in test_ex[:40]:
        ids = common.encode(tok, e["text"], context)
        onnx_logit = sess.run(["logits"], {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), np.int64)})[0][0, 0]
        f, l = features(ids)
        np_logit = model.forward(f[None], l[None])[0][0]
        worst = max(worst, abs(onnx_logit - np_logit))
    assert worst < 1e-3, f"the ONNX model differs from numpy by {worst}"

    # Held-out trajectories for the worker's tests: the first of each family of each held-out task.
    chosen, seen = [], set()
    for e in test_ex:
        key = (e["task"], e["family"])
        if key not in seen:
            seen.add(key)
            ids = common.encode(tok, e["text"], context)
            logit = sess.run(["logits"], {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), np.int64)})[0][0, 0]
            chosen.append({"task": e["task"], "family": e["family"], "label": e["label"], "tokens": len(ids),
                           "python_on_track": round(float(1 / (1 + np.exp(-logit))), 6), "messages": e["messages"]})
    common.dump_json(OUT / "examples.json", {
        "what": "held-out SYNTHETIC trajectories (tasks the scorer was not trained on), one per task and family; "
                "made by models/make_scorer.py",
        "examples": chosen,
    })
    # The replay agent's scripts: each task's solving scenario, and the misbehaving ones played on it.
    def p_on_track(msgs):
        ids = common.encode(tok, common.render(OUT, config, msgs), context)
        logit = sess.run(["logits"], {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), np.int64)})[0][0, 0]
        return round(float(1 / (1 + np.exp(-logit))), 4)

    replay = {
        t.instance_id: {
            "solving": p_on_track(synthetic.scenario_messages(t)),
            "loop": p_on_track(synthetic.replay_misbehaving(t, "loop")),
            "format-errors": p_on_track(synthetic.replay_misbehaving(t, "format-errors")),
        }
        for t in tasks
    }
    print(f"replay scenarios: {replay}", file=sys.stderr)
    lengths = sorted(e["tokens"] for e in examples)
    common.dump_json(OUT / "training.json", {
        "what": "the shipped scorer's training run (models/make_scorer.py); SYNTHETIC data",
        "held_out_tasks": list(synthetic.HELD_OUT_TASKS),
        "train_trajectories": len(train_ex),
        "held_out_trajectories": len(test_ex),
        "tokens_per_trajectory": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1]},
        "train_accuracy": round(train_acc, 4),
        "held_out_accuracy": round(test_acc, 4),
        "held_out_accuracy_by_family": test_by_family,
        "replay_scenarios_on_track": replay,
        "vocab": VOCAB, "dim": DIM, "hidden": HIDDEN, "tail_tokens": TAIL, "steps": STEPS,
    })
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
