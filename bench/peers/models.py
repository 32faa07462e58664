"""The five benchmark models, each in PyTorch and in plain JAX (jax.numpy + jax.lax).

Every model is trained with the same full step: forward, softmax cross-entropy
(mean over the batch, and over the time steps for the RNN), backward, and an
Adam update with lr 1e-3 and torch.optim.Adam's defaults (betas 0.9/0.999,
eps 1e-8, no weight decay, bias correction).

The framework modules (torch, jax) are imported lazily so that the caller can
set the thread environment (OMP_NUM_THREADS, XLA_FLAGS, CPU affinity) before
either framework is loaded; see bench.py.

Layouts: PyTorch uses its default NCHW.  The JAX convolutions use NHWC (XLA's
native CPU layout); the JAX input batch is the same seeded NCHW array
transposed once outside the timed loop, i.e. it counts as data loading.

Public API
  SPECS[name]                         -> ModelSpec (batch, input/label shapes, description)
  make_batch(name, seed)              -> (x, y) numpy arrays, seeded
  torch_setup(name, compiled, seed)   -> (step_fn, x, y); step_fn() runs one step, returns loss tensor
  jax_setup(name, seed)               -> (step_fn, state_getter); step_fn() runs one step
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LR = 1e-3
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

RNN_VOCAB, RNN_HIDDEN, RNN_STEPS = 65, 128, 32


@dataclass(frozen=True)
class ModelSpec:
    name: str
    batch: int
    x_shape: tuple  # including the batch dimension
    x_kind: str  # "float" (normal(0,1)) or "tokens" (ints in [0, classes))
    y_shape: tuple
    classes: int
    params: int  # trainable parameter count, checked by the self-test
    desc: str


SPECS = {
    s.name: s
    for s in [
        ModelSpec("digits_mlp", 32, (32, 64), "float", (32,), 10,
                  64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10,
                  "MLP 64-128-64-10 ReLU"),
        ModelSpec("mnist_mlp", 128, (128, 784), "float", (128,), 10,
                  784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10,
                  "MLP 784-512-256-10 ReLU"),
        ModelSpec("lenet", 64, (64, 1, 28, 28), "float", (64,), 10, 61706,
                  "LeNet-5: conv6@5x5 p2, pool, conv16@5x5, pool, 120-84-10"),
        ModelSpec("resnet_mini", 32, (32, 3, 32, 32), "float", (32,), 10, None,
                  "ResNet-mini 16/32/64 x 2 basic blocks, no BN, GAP, dense 10"),
        ModelSpec("elman", 32, (32, RNN_STEPS), "tokens", (32, RNN_STEPS), RNN_VOCAB,
                  RNN_VOCAB * RNN_HIDDEN + RNN_HIDDEN * RNN_HIDDEN + RNN_HIDDEN
                  + RNN_HIDDEN * RNN_VOCAB + RNN_VOCAB,
                  "Elman RNN one-hot 65 -> tanh 128 -> 65, 32 steps"),
    ]
}
MODELS = list(SPECS)


def _resnet_params():
    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    n = conv(3, 16, 3)
    cin = 16
    for cout in (16, 32, 64):
        for blk in range(2):
            n += conv(cin, cout, 3) + conv(cout, cout, 3)
            if cin != cout:
                n += conv(cin, cout, 1)
            cin = cout
    return n + 64 * 10 + 10


SPECS["resnet_mini"] = ModelSpec(**{**SPECS["resnet_mini"].__dict__, "params": _resnet_params()})


def make_batch(name: str, seed: int = 0):
    """One fixed, seeded batch: x float32 N(0,1) (or int tokens), y int labels."""
    s = SPECS[name]
    rng = np.random.default_rng(seed)
    if s.x_kind == "tokens":
        x = rng.integers(0, s.classes, size=s.x_shape, dtype=np.int64)
    else:
        x = rng.standard_normal(s.x_shape, dtype=np.float32)
    y = rng.integers(0, s.classes, size=s.y_shape, dtype=np.int64)
    return x, y


# ----------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------

def _torch_modules():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.proj = nn.Conv2d(cin, cout, 1, stride=stride) if (stride != 1 or cin != cout) else None

        def forward(self, x):
            out = self.conv2(F.relu(self.conv1(x)))
            sc = x if self.proj is None else self.proj(x)
            return F.relu(out + sc)

    class ResNetMini(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            blocks, cin = [], 16
            for cout, stride in ((16, 1), (32, 2), (64, 2)):
                blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.blocks(F.relu(self.stem(x)))
            return self.fc(x.mean(dim=(2, 3)))

    class Elman(nn.Module):
        """s_t = tanh(x_t U + s_{t-1} W + b),  o_t = s_t V + c; x_t one-hot."""

        def __init__(self, vocab=RNN_VOCAB, hidden=RNN_HIDDEN):
            super().__init__()
            k = 1.0 / math.sqrt(hidden)
            self.vocab, self.hidden = vocab, hidden
            self.U = nn.Parameter(torch.empty(vocab, hidden).uniform_(-k, k))
            self.W = nn.Parameter(torch.empty(hidden, hidden).uniform_(-k, k))
            self.b = nn.Parameter(torch.zeros(hidden))
            self.V = nn.Parameter(torch.empty(hidden, vocab).uniform_(-k, k))
            self.c = nn.Parameter(torch.zeros(vocab))

        def forward(self, tokens):  # tokens [B, T] int64 -> logits [B, T, vocab]
            xu = F.one_hot(tokens, self.vocab).to(self.U.dtype) @ self.U  # [B, T, H], all steps at once
            s = torch.zeros(tokens.shape[0], self.hidden, dtype=xu.dtype)
            states = []
            for t in range(tokens.shape[1]):
                s = torch.tanh(xu[:, t] + s @ self.W + self.b)
                states.append(s)
            return torch.stack(states, dim=1) @ self.V + self.c

    def build(name):
        if name == "digits_mlp":
            return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
        if name == "mnist_mlp":
            return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
        if name == "lenet":
            return nn.Sequential(
                nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
                nn.Linear(120, 84), nn.ReLU(),
                nn.Linear(84, 10))
        if name == "resnet_mini":
            return ResNetMini()
        if name == "elman":
            return Elman()
        raise KeyError(name)

    return build


def torch_setup(name: str, compiled: bool, seed: int = 0, adam_impl: str = "default"):
    """Returns (step, x, y): step(x, y) performs one full training step and returns the loss.

    compiled=False: eager PyTorch.
    compiled=True: torch.compile on forward+loss (AOTAutograd compiles the backward too)
                   and on the optimizer step (the pattern of the "compiling the optimizer"
                   tutorial); zero_grad and the backward call stay in Python.
    adam_impl: "default" (torch.optim.Adam(lr=1e-3) exactly as constructed by default;
               on CPU that is the single-tensor for-loop implementation), "foreach" or "fused".
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = _torch_modules()(name)
    kw = {} if adam_impl == "default" else {adam_impl: True}
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS, **kw)
    classes = SPECS[name].classes

    def loss_fn(x, y):
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, classes), y.reshape(-1))

    xn, yn = make_batch(name, seed)
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)

    if compiled:
        fwd = torch.compile(loss_fn)

        @torch.compile(fullgraph=False)
        def opt_step():
            opt.step()
    else:
        fwd, opt_step = loss_fn, opt.step

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = fwd(x, y)
        loss.backward()
        opt_step()
        return loss

    return step, x, y, model



def torch_training_memory(step, x, y) -> dict:
    """Eager PyTorch's peak tensor memory during one training step, in bytes.

    Measured with torch.profiler's memory timeline (every CPU tensor allocation and
    free, each tagged parameter, optimizer state, input, temporary, activation,
    gradient or autograd detail): the largest total over the step with the input
    batch left out, as nnc's training memory leaves out the caller's input too.
    Call it after a few steps, so that the optimizer state exists.
    """
    import json
    import tempfile
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                 record_shapes=True, with_stack=True) as prof:
        step(x, y)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the timeline export is deprecated, not yet replaced on CPU
        path = f"{d}/timeline.json"
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)
    # Columns: [?, parameter, optimizer state, input, temporary, activation,
    # gradient, autograd detail, unknown] (torch.profiler._memory_profiler).
    names = ["parameter", "optimizer", "input", "temporary", "activation", "gradient",
             "autograd", "unknown"]
    peak = max(sizes, key=lambda s: sum(s) - s[3])
    out = dict(zip(names, peak[1:]))
    out["total"] = sum(peak) - peak[3]
    return out

# ----------------------------------------------------------------------------
# JAX (plain jax.numpy + jax.lax, hand-written Adam)
# ----------------------------------------------------------------------------

def _jax_model(name: str, key):
    """Returns (params, apply) with apply(params, x) -> logits. Init as PyTorch's default
    (uniform +-1/sqrt(fan_in) for weights and biases)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    keys = iter(jax.random.split(key, 64))

    def uni(shape, fan_in):
        k = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(next(keys), shape, jnp.float32, -k, k)

    def dense_p(i, o):
        return {"w": uni((i, o), i), "b": uni((o,), i)}

    def conv_p(cin, cout, k):  # HWIO
        return {"w": uni((k, k, cin, cout), cin * k * k), "b": uni((cout,), cin * k * k)}

    def dense(p, x):
        return x @ p["w"] + p["b"]

    def conv(p, x, stride=1, pad=0):
        y = lax.conv_general_dilated(x, p["w"], (stride, stride), [(pad, pad), (pad, pad)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + p["b"]

    def maxpool2(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    relu = jax.nn.relu

    if name in ("digits_mlp", "mnist_mlp"):
        sizes = (64, 128, 64, 10) if name == "digits_mlp" else (784, 512, 256, 10)
        params = [dense_p(a, b) for a, b in zip(sizes[:-1], sizes[1:])]

        def apply(params, x):
            for p in params[:-1]:
                x = relu(dense(p, x))
            return dense(params[-1], x)

    elif name == "lenet":
        params = {"c1": conv_p(1, 6, 5), "c2": conv_p(6, 16, 5),
                  "d1": dense_p(400, 120), "d2": dense_p(120, 84), "d3": dense_p(84, 10)}

        def apply(p, x):  # x NHWC [B, 28, 28, 1]
            x = maxpool2(relu(conv(p["c1"], x, pad=2)))
            x = maxpool2(relu(conv(p["c2"], x)))
            x = x.reshape(x.shape[0], -1)
            x = relu(dense(p["d1"], x))
            x = relu(dense(p["d2"], x))
            return dense(p["d3"], x)

    elif name == "resnet_mini":
        plan, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            plan += [(cin, cout, stride), (cout, cout, 1)]
            cin = cout
        blocks = []
        for cin, cout, stride in plan:
            b = {"c1": conv_p(cin, cout, 3), "c2": conv_p(cout, cout, 3)}
            if stride != 1 or cin != cout:
                b["proj"] = conv_p(cin, cout, 1)
            blocks.append(b)
        params = {"stem": conv_p(3, 16, 3), "blocks": blocks, "fc": dense_p(64, 10)}
        strides = [s for _, _, s in plan]

        def apply(p, x):  # x NHWC [B, 32, 32, 3]
            x = relu(conv(p["stem"], x, pad=1))
            for b, s in zip(p["blocks"], strides):
                out = conv(b["c2"], relu(conv(b["c1"], x, stride=s, pad=1)), pad=1)
                sc = conv(b["proj"], x, stride=s) if "proj" in b else x
                x = relu(out + sc)
            return dense(p["fc"], x.mean(axis=(1, 2)))

    elif name == "elman":
        V, H = RNN_VOCAB, RNN_HIDDEN
        k = 1.0 / math.sqrt(H)
        params = {"U": jax.random.uniform(next(keys), (V, H), jnp.float32, -k, k),
                  "W": jax.random.uniform(next(keys), (H, H), jnp.float32, -k, k),
                  "b": jnp.zeros((H,), jnp.float32),
                  "V": jax.random.uniform(next(keys), (H, V), jnp.float32, -k, k),
                  "c": jnp.zeros((V,), jnp.float32)}

        def apply(p, tokens):  # tokens [B, T] int32 -> logits [B, T, V]
            xu = jax.nn.one_hot(tokens, V, dtype=jnp.float32) @ p["U"]  # [B, T, H]

            def cell(s, xu_t):
                s = jnp.tanh(xu_t + s @ p["W"] + p["b"])
                return s, s

            s0 = jnp.zeros((tokens.shape[0], H), jnp.float32)
            _, states = lax.scan(cell, s0, jnp.swapaxes(xu, 0, 1))  # [T, B, H]
            return jnp.swapaxes(states, 0, 1) @ p["V"] + p["c"]
    else:
        raise KeyError(name)
    return params, apply


def jax_setup(name: str, seed: int = 0):
    """Returns (step, state, x, y): state = (params, opt_state);
    step(params, opt_state, x, y) -> (params, opt_state, loss) is jax.jit-compiled with the
    params and optimizer state donated (updated in place)."""
    import jax
    import jax.numpy as jnp

    params, apply = _jax_model(name, jax.random.PRNGKey(seed))
    classes = SPECS[name].classes

    def loss_fn(params, x, y):
        logits = apply(params, x).reshape(-1, classes)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(logp, y.reshape(-1, 1), axis=-1).mean()

    def adam_init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return {"m": zeros, "v": jax.tree_util.tree_map(jnp.zeros_like, params),
                "t": jnp.zeros((), jnp.float32)}

    def train_step(params, opt, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        t = opt["t"] + 1.0
        m = jax.tree_util.tree_map(lambda m, g: BETA1 * m + (1 - BETA1) * g, opt["m"], grads)
        v = jax.tree_util.tree_map(lambda v, g: BETA2 * v + (1 - BETA2) * g * g, opt["v"], grads)
        # torch.optim.Adam (single-tensor): p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
        step_size = LR / (1 - BETA1 ** t)
        bc2_sqrt = jnp.sqrt(1 - BETA2 ** t)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / bc2_sqrt + EPS), params, m, v)
        return params, {"m": m, "v": v, "t": t}, loss

    xn, yn = make_batch(name, seed)
    if xn.ndim == 4:
        xn = np.ascontiguousarray(xn.transpose(0, 2, 3, 1))  # NCHW -> NHWC (data loading)
    x = jnp.asarray(xn if SPECS[name].x_kind == "float" else xn.astype(np.int32))
    y = jnp.asarray(yn.astype(np.int32))
    step = jax.jit(train_step, donate_argnums=(0, 1))
    return step, (params, adam_init(params)), x, y


def count_params_torch(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_params_jax(params) -> int:
    import jax
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))


if __name__ == "__main__":
    # Self-test: parameter counts agree with the spec in both frameworks, and a few steps
    # on the fixed batch lower the loss in both frameworks.
    import sys

    names = sys.argv[1:] or MODELS
    for n in names:
        step, x, y, model = torch_setup(n, compiled=False)
        tl = [float(step(x, y).detach()) for _ in range(20)]
        jstep, (p, o), jx, jy = jax_setup(n)
        jp = count_params_jax(p)
        jl = []
        for _ in range(20):
            p, o, l = jstep(p, o, jx, jy)
            jl.append(float(l))
        tp = count_params_torch(model)
        ok = tp == jp == SPECS[n].params and tl[-1] < tl[0] and jl[-1] < jl[0]
        print(f"{n:12s} params torch {tp} jax {jp} spec {SPECS[n].params}  "
              f"loss torch {tl[0]:.4f}->{tl[-1]:.4f}  jax {jl[0]:.4f}->{jl[-1]:.4f}  {'ok' if ok else 'FAIL'}")
        if not ok:
            sys.exit(1)
