"""Makes models/tiny-generative/: a tiny decoder-only transformer with RANDOM but seeded weights
and a small byte-level BPE tokenizer, exported to ONNX with a key/value cache. Its output is
meaningless text; it exists to test and benchmark the generative path.

    py=$(scripts/ensure-python-ref) && "$py" models/make_tiny_generative.py

The graph has exactly the inputs and outputs of an `optimum-cli export onnx --task
text-generation-with-past` export of a Hugging Face causal LM (Qwen, Llama, ...):

    input_ids                   int64 [batch, sequence]
    attention_mask              int64 [batch, past_sequence + sequence]
    position_ids                int64 [batch, sequence]
    past_key_values.{i}.key     float [batch, 2, past_sequence, 16]   (i = 0, 1)
    past_key_values.{i}.value   float [batch, 2, past_sequence, 16]
 -> logits                      float [batch, sequence, 1024]
    present.{i}.key / .value    float [batch, 2, past_sequence + sequence, 16]

Architecture: embeddings (1024 x 64) + sinusoidal positions computed from position_ids; 2 pre-norm
layers of grouped-query attention (4 query heads, 2 key/value heads, head dim 16; causal and
padding mask from attention_mask) and a SiLU MLP (128); final LayerNorm; an untied output
projection to the logits. Built with onnx.helper from standard ops (opset 17).
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

OUT = common.MODELS / "tiny-generative"
VOCAB = 1024
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
LAYERS = 2
FFN = 128
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts):
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


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, name, value, dtype=np.float32):
        t = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        t.name = name
        self.inits.append(t)
        return name

    def op(self, kind, inputs, out=None, **attrs):
        if out is None:
            self.n += 1
            out = f"{kind.lower()}_{self.n}"
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out


def build(rng: np.random.Generator) -> onnx.ModelProto:
    g = Graph()
    w = lambda *shape: rng.normal(0, 1.5 / np.sqrt(shape[0]), shape)  # noqa: E731
    g.const("embed", rng.normal(0, 0.5, (VOCAB, HIDDEN)))
    for name, v in [("i0", 0), ("i1", 1), ("i2", 2)]:
        g.const(name, v, np.int64)
    g.const("ax0", [0], np.int64)
    g.const("ax1", [1], np.int64)
    g.const("ax_last", [-1], np.int64)
    g.const("ax01", [0, 1], np.int64)
    g.const("inv_freq", 1.0 / (10000 ** (np.arange(0, HIDDEN, 2) / HIDDEN)))
    g.const("neg", -1e9)
    g.const("zero", 0.0)
    g.const("scale", 1.0 / np.sqrt(HEAD_DIM))
    g.const("shape_q", [0, 0, HEADS, HEAD_DIM], np.int64)
    g.const("shape_kv", [0, 0, KV_HEADS, HEAD_DIM], np.int64)
    g.const("shape_groups", [0, KV_HEADS, -1, HEAD_DIM], np.int64)
    g.const("shape_scores", [0, HEADS, -1, 0], np.int64)
    g.const("shape_scores_g", [0, KV_HEADS, -1, 0], np.int64)
    g.const("shape_merge", [0, 0, HEADS * HEAD_DIM], np.int64)

    x = g.op("Gather", ["embed", "input_ids"])  # [B, S, H]
    # Sinusoidal positions from position_ids.
    pos = g.op("Cast", ["position_ids"], to=TensorProto.FLOAT)
    pos = g.op("Unsqueeze", [pos, "ax_last"])  # [B, S, 1]
    ang = g.op("Mul", [pos, "inv_freq"])  # [B, S, H/2]
    pe = g.op("Concat", [g.op("Sin", [ang]), g.op("Cos", [ang])], axis=-1)
    x = g.op("Add", [x, pe])

    # Mask: query i of this call sits at absolute index past + i; it sees keys j <= past + i
    # whose attention_mask is 1.
    past_len = g.op("Gather", [g.op("Shape", ["past_key_values.0.key"]), "i2"])  # scalar
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"]), "i1"])
    total = g.op("Add", [past_len, seq_len])
    key_idx = g.op("Range", ["i0", total, "i1"])  # [T]
    q_idx = g.op("Range", [past_len, total, "i1"])  # [S]
    causal = g.op("LessOrEqual", [g.op("Unsqueeze", [key_idx, "ax0"]), g.op("Unsqueeze", [q_idx, "ax1"])])  # [S, T]
    causal = g.op("Unsqueeze", [causal, "ax01"])  # [1, 1, S, T]
    keep = g.op("Cast", ["attention_mask"], to=TensorProto.BOOL)  # [B, T]
    keep = g.op("Unsqueeze", [keep, g.const("ax12", [1, 2], np.int64)])  # [B, 1, 1, T]
    allowed = g.op("And", [causal, keep])  # [B, 1, S, T]
    bias = g.op("Where", [allowed, "zero", "neg"])

    outputs = []
    for layer in range(LAYERS):
        p = f"l{layer}."
        ln1 = g.op("LayerNormalization", [x, g.const(p + "ln1.w", np.ones(HIDDEN)), g.const(p + "ln1.b", np.zeros(HIDDEN))], axis=-1)
        q = g.op("MatMul", [ln1, g.const(p + "wq", w(HIDDEN, HEADS * HEAD_DIM))])
        k = g.op("MatMul", [ln1, g.const(p + "wk", w(HIDDEN, KV_HEADS * HEAD_DIM))])
        v = g.op("MatMul", [ln1, g.const(p + "wv", w(HIDDEN, KV_HEADS * HEAD_DIM))])
        q = g.op("Transpose", [g.op("Reshape", [q, "shape_q"])], perm=[0, 2, 1, 3])  # [B, NH, S, D]
        k = g.op("Transpose", [g.op("Reshape", [k, "shape_kv"])], perm=[0, 2, 1, 3])  # [B, KVH, S, D]
        v = g.op("Transpose", [g.op("Reshape", [v, "shape_kv"])], perm=[0, 2, 1, 3])
        k_all = g.op("Concat", [f"past_key_values.{layer}.key", k], f"present.{layer}.key", axis=2)  # [B, KVH, T, D]
        v_all = g.op("Concat", [f"past_key_values.{layer}.value", v], f"present.{layer}.value", axis=2)
        outputs += [f"present.{layer}.key", f"present.{layer}.value"]
        # Grouped-query attention: query heads 2j, 2j+1 use key/value head j.
        qg = g.op("Reshape", [q, "shape_groups"])  # [B, KVH, G*S, D]
        scores = g.op("MatMul", [qg, g.op("Transpose", [k_all], perm=[0, 1, 3, 2])])  # [B, KVH, G*S, T]
        scores = g.op("Reshape", [scores, "shape_scores"])  # [B, NH, S, T]
        scores = g.op("Add", [g.op("Mul", [scores, "scale"]), bias])
        probs = g.op("Softmax", [scores], axis=-1)
        probs = g.op("Reshape", [probs, "shape_scores_g"])  # [B, KVH, G*S, T]
        ctx = g.op("MatMul", [probs, v_all])  # [B, KVH, G*S, D]
        ctx = g.op("Reshape", [ctx, g.const(p + "shape_ctx", [0, HEADS, -1, HEAD_DIM], np.int64)])  # [B, NH, S, D]
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), "shape_merge"])  # [B, S, NH*D]
        x = g.op("Add", [x, g.op("MatMul", [ctx, g.const(p + "wo", w(HEADS * HEAD_DIM, HIDDEN))])])
        ln2 = g.op("LayerNormalization", [x, g.const(p + "ln2.w", np.ones(HIDDEN)), g.const(p + "ln2.b", np.zeros(HIDDEN))], axis=-1)
        up = g.op("MatMul", [ln2, g.const(p + "w1", w(HIDDEN, FFN))])
        act = g.op("Mul", [up, g.op("Sigmoid", [up])])  # SiLU
        x = g.op("Add", [x, g.op("MatMul", [act, g.const(p + "w2", w(FFN, HIDDEN))])])
    final = g.op("LayerNormalization", [x, g.const("lnf.w", np.ones(HIDDEN)), g.const("lnf.b", np.zeros(HIDDEN))], axis=-1)
    g.op("MatMul", [final, g.const("lm_head", rng.normal(0, 0.5, (HIDDEN, VOCAB)))], "logits")

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "past_sequence_length + sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", VOCAB])]
    for layer in range(LAYERS):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{layer}.{kind}", TensorProto.FLOAT, ["batch_size", KV_HEADS, "past_sequence_length", HEAD_DIM]))
            outs.append(helper.make_tensor_value_info(
                f"present.{layer}.{kind}", TensorProto.FLOAT, ["batch_size", KV_HEADS, "past_sequence_length + 1", HEAD_DIM]))
    graph = helper.make_graph(g.nodes, "steerbench_tiny_generative", inputs, outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="steerbench models/make_tiny_generative.py")
    model.doc_string = "RANDOM weights (seed 0): meaningless text; for tests and benchmarks of the generative path"
    onnx.checker.check_model(model, full_check=True)
    return model


def generate(sess, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Greedy decoding with the cache, one prompt at a time (the reference the worker must match)."""
    out = []
    for ids in prompts:
        past = {f"past_key_values.{l}.{k}": np.zeros((1, KV_HEADS, 0, HEAD_DIM), np.float32)
                for l in range(LAYERS) for k in ("key", "value")}
        seq = list(ids)
        feed_ids, start = list(ids), 0
        tokens = []
        for _ in range(new_tokens):
            n = len(feed_ids)
            feeds = {"input_ids": np.array([feed_ids], np.int64),
                     "attention_mask": np.ones((1, start + n), np.int64),
                     "position_ids": np.arange(start, start + n, dtype=np.int64)[None], **past}
            res = sess.run(None, feeds)
            names = [o.name for o in sess.get_outputs()]
            res = dict(zip(names, res))
            nxt = int(np.argmax(res["logits"][0, -1]))
            tokens.append(nxt)
            past = {f"past_key_values.{l}.{k}": res[f"present.{l}.{k}"] for l in range(LAYERS) for k in ("key", "value")}
            start += n
            feed_ids = [nxt]
            seq.append(nxt)
        out.append(tokens)
    return out


def check_cache(sess, ids: list[int]) -> None:
    """Logits with the cache equal logits of the whole sequence at once."""
    empty = {f"past_key_values.{l}.{k}": np.zeros((1, KV_HEADS, 0, HEAD_DIM), np.float32)
             for l in range(LAYERS) for k in ("key", "value")}
    n = len(ids)
    full = sess.run(["logits"], {"input_ids": np.array([ids]), "attention_mask": np.ones((1, n), np.int64),
                                 "position_ids": np.arange(n)[None], **empty})[0]
    names = [o.name for o in sess.get_outputs()]
    res = dict(zip(names, sess.run(None, {"input_ids": np.array([ids[:-3]]), "attention_mask": np.ones((1, n - 3), np.int64),
                                          "position_ids": np.arange(n - 3)[None], **empty})))
    past = {f"past_key_values.{l}.{k}": res[f"present.{l}.{k}"] for l in range(LAYERS) for k in ("key", "value")}
    tail = sess.run(["logits"], {"input_ids": np.array([ids[-3:]]), "attention_mask": np.ones((1, n), np.int64),
                                 "position_ids": np.arange(n - 3, n)[None], **past})[0]
    diff = np.abs(full[0, -3:] - tail[0]).max()
    assert diff < 1e-4, f"cached and uncached logits differ by {diff}"


def main() -> None:
    config = common.read_config(OUT)
    tasks = synthetic.load_tasks()
    texts = [common.render(OUT, config, e["messages"], add_generation_prompt=False)
             for e in synthetic.make_examples(tasks, 20)]
    tok = train_tokenizer(texts)
    OUT.mkdir(exist_ok=True)
    tok.save(str(OUT / "tokenizer.json"))
    assert [tok.token_to_id(s) for s in SPECIAL] == [0, 1, 2]
    model = build(np.random.default_rng(0))
    (OUT / "model.onnx").write_bytes(model.SerializeToString())
    sess = common.session(OUT / "model.onnx")
    check_cache(sess, tok.encode(texts[0][:2000]).ids)
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
