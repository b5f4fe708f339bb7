"""Readers/writers for the sinkscope binary formats (model file v3/v4, debug state v2/v3,
token shards), written from the specification in README.md ("The model family", "File formats") only.

All integers are little-endian int32, all floats little-endian IEEE float32.  Float fields
inside the int32 header are stored as the float's bit pattern (struct '<f' -> '<i').
"""
import struct
from dataclasses import dataclass, field, asdict
from collections import OrderedDict

import numpy as np

MODEL_MAGIC = 20240326
STATE_MAGIC = 20240327
SHARD_MAGIC = 20240520
HEADER_INTS = 256

NORMS = ["layernorm", "rmsnorm"]
PLACEMENTS = ["pre", "post"]
FFNS = ["relu", "gelu", "swish", "reglu", "geglu", "swiglu"]
POSITIONS = ["none", "sinusoidal", "learned", "rope", "alibi"]
GATED = {"reglu", "geglu", "swiglu"}


def f32_bits(x):
    """float -> int32 holding its float32 bit pattern"""
    return struct.unpack("<i", struct.pack("<f", float(x)))[0]


def bits_f32(i):
    """int32 bit pattern -> python float (the float32 value, exactly)"""
    return struct.unpack("<f", struct.pack("<i", int(i)))[0]


def f32(x):
    """round a python float to the nearest float32 value"""
    return bits_f32(f32_bits(x))


def padded_vocab(V):
    return ((V + 127) // 128) * 128


@dataclass
class Config:
    V: int
    maxT: int
    L: int
    NH: int
    C: int
    F: int
    norm: str = "layernorm"
    placement: str = "pre"
    ffn: str = "gelu"
    positions: str = "learned"
    tied: bool = True
    biases: bool = True
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    attn_variant: int = 0
    Vp: int = 0  # 0 -> computed

    def __post_init__(self):
        if not self.Vp:
            self.Vp = padded_vocab(self.V)
        assert self.norm in NORMS and self.placement in PLACEMENTS
        assert self.ffn in FFNS and self.positions in POSITIONS
        assert self.C % self.NH == 0
        self.tied = bool(self.tied)
        self.biases = bool(self.biases)
        # float header fields are float32: keep exactly the value a file (and the fp32 engine) holds
        self.rope_base = f32(self.rope_base)
        self.norm_eps = f32(self.norm_eps)

    @property
    def hs(self):
        return self.C // self.NH

    @property
    def gated(self):
        return self.ffn in GATED

    def is_gpt2(self):
        """the configuration that a version-3 (llm.c) file implies"""
        return (self.norm == "layernorm" and self.norm_eps == f32(1e-5) and self.placement == "pre"
                and self.ffn == "gelu" and self.F == 4 * self.C and self.positions == "learned"
                and self.tied and self.biases and self.attn_variant == 0)

    def to_dict(self):
        return asdict(self)


def param_shapes(cfg):
    """OrderedDict name -> shape, in file order (absent tensors omitted)."""
    V, Vp, C, L, F, maxT = cfg.V, cfg.Vp, cfg.C, cfg.L, cfg.F, cfg.maxT
    ln = cfg.norm == "layernorm"
    b = cfg.biases
    pre = cfg.placement == "pre"
    s = OrderedDict()
    s["wte"] = (Vp, C)
    if cfg.positions == "learned":
        s["wpe"] = (maxT, C)
    s["ln1w"] = (L, C)
    if ln:
        s["ln1b"] = (L, C)
    s["qkvw"] = (L, 3 * C, C)
    if b:
        s["qkvb"] = (L, 3 * C)
    s["attprojw"] = (L, C, C)
    if b:
        s["attprojb"] = (L, C)
    s["ln2w"] = (L, C)
    if ln:
        s["ln2b"] = (L, C)
    s["fcw"] = (L, F, C)
    if b:
        s["fcb"] = (L, F)
    if cfg.gated:
        s["fcw2"] = (L, F, C)
        if b:
            s["fcb2"] = (L, F)
    s["fcprojw"] = (L, C, F)
    if b:
        s["fcprojb"] = (L, C)
    if pre:
        s["lnfw"] = (C,)
        if ln:
            s["lnfb"] = (C,)
    if not cfg.tied:
        s["lm_head"] = (Vp, C)
    return s


def num_params(cfg):
    return int(sum(np.prod(sh) for sh in param_shapes(cfg).values()))


def flatten_params(cfg, params):
    """dict name -> array  ->  one float32 vector in file order"""
    shapes = param_shapes(cfg)
    assert set(params.keys()) == set(shapes.keys()), (sorted(params), sorted(shapes))
    out = []
    for name, sh in shapes.items():
        a = np.asarray(params[name], dtype=np.float32)
        assert a.shape == tuple(sh), (name, a.shape, sh)
        out.append(a.reshape(-1))
    return np.concatenate(out).astype("<f4")


def unflatten_params(cfg, flat):
    shapes = param_shapes(cfg)
    flat = np.asarray(flat)
    assert flat.size == num_params(cfg), (flat.size, num_params(cfg))
    out = OrderedDict()
    off = 0
    for name, sh in shapes.items():
        n = int(np.prod(sh))
        out[name] = flat[off:off + n].reshape(sh).copy()
        off += n
    return out


# ----------------------------------------------------------------------------------------------
# model file


def model_header(cfg, version=None):
    if version is None:
        version = 3 if cfg.is_gpt2() else 4
    h = np.zeros(HEADER_INTS, dtype="<i4")
    h[0] = MODEL_MAGIC
    h[1] = version
    h[2] = cfg.maxT
    h[3] = cfg.V
    h[4] = cfg.L
    h[5] = cfg.NH
    h[6] = cfg.C
    h[7] = cfg.Vp
    if version == 3:
        assert cfg.is_gpt2(), "version 3 can only hold the gpt2 architecture"
    elif version == 4:
        h[8] = cfg.F
        h[9] = NORMS.index(cfg.norm)
        h[10] = PLACEMENTS.index(cfg.placement)
        h[11] = FFNS.index(cfg.ffn)
        h[12] = POSITIONS.index(cfg.positions)
        h[13] = int(cfg.tied)
        h[14] = int(cfg.biases)
        h[15] = f32_bits(cfg.rope_base)
        h[16] = f32_bits(cfg.norm_eps)
        h[17] = cfg.attn_variant
    else:
        raise ValueError("unknown model version %d" % version)
    return h


def write_model(path, cfg, params, version=None):
    h = model_header(cfg, version)
    flat = flatten_params(cfg, params)
    with open(path, "wb") as f:
        f.write(h.tobytes())
        f.write(flat.tobytes())


def config_from_model_header(h):
    h = np.asarray(h, dtype=np.int64)
    if h[0] != MODEL_MAGIC:
        raise ValueError("bad model magic %d" % h[0])
    version = int(h[1])
    maxT, V, L, NH, C, Vp = (int(x) for x in h[2:8])
    if version == 3:
        cfg = Config(V=V, maxT=maxT, L=L, NH=NH, C=C, F=4 * C, norm="layernorm", placement="pre",
                     ffn="gelu", positions="learned", tied=True, biases=True, rope_base=10000.0,
                     norm_eps=1e-5, attn_variant=0, Vp=Vp)
    elif version == 4:
        cfg = Config(V=V, maxT=maxT, L=L, NH=NH, C=C, F=int(h[8]), norm=NORMS[h[9]],
                     placement=PLACEMENTS[h[10]], ffn=FFNS[h[11]], positions=POSITIONS[h[12]],
                     tied=bool(h[13]), biases=bool(h[14]), rope_base=bits_f32(h[15]),
                     norm_eps=bits_f32(h[16]), attn_variant=int(h[17]), Vp=Vp)
        if cfg.attn_variant != 0:
            raise ValueError("attention variant %d not supported by this reference" % cfg.attn_variant)
    else:
        raise ValueError("unknown model version %d" % version)
    return cfg, version


def read_model(path):
    """-> (cfg, params OrderedDict of float32 arrays, version)"""
    with open(path, "rb") as f:
        data = f.read()
    h = np.frombuffer(data[:4 * HEADER_INTS], dtype="<i4")
    cfg, version = config_from_model_header(h)
    flat = np.frombuffer(data[4 * HEADER_INTS:], dtype="<f4")
    if flat.size != num_params(cfg):
        raise ValueError("model file holds %d floats, config needs %d" % (flat.size, num_params(cfg)))
    return cfg, unflatten_params(cfg, flat), version


# ----------------------------------------------------------------------------------------------
# debug state


@dataclass
class DebugState:
    B: int
    T: int
    inputs: np.ndarray   # int32 (B, T)
    targets: np.ndarray  # int32 (B, T)
    logits: np.ndarray   # float32 (B, T, V)
    loss: float
    grads: np.ndarray    # float32 (num_params,)
    version: int = 3
    V: int = 0
    n_steps: int = 0
    lr: float = 0.0
    beta1: float = 0.0
    beta2: float = 0.0
    adam_eps: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


def write_state(path, st, version=None):
    version = st.version if version is None else version
    B, T = st.B, st.T
    inputs = np.asarray(st.inputs, dtype="<i4").reshape(B, T)
    targets = np.asarray(st.targets, dtype="<i4").reshape(B, T)
    logits = np.asarray(st.logits, dtype="<f4")
    V = logits.shape[-1]
    assert logits.shape == (B, T, V)
    grads = np.asarray(st.grads, dtype="<f4").reshape(-1)
    h = np.zeros(HEADER_INTS, dtype="<i4")
    h[0] = STATE_MAGIC
    h[1] = version
    h[2] = B
    h[3] = T
    if version == 3:
        losses = np.asarray(st.losses, dtype="<f4").reshape(-1)
        assert losses.size == st.n_steps
        h[4] = V
        h[5] = grads.size
        h[6] = st.n_steps
        h[7] = f32_bits(st.lr)
        h[8] = f32_bits(st.beta1)
        h[9] = f32_bits(st.beta2)
        h[10] = f32_bits(st.adam_eps)
        h[11] = f32_bits(st.weight_decay)
        h[12] = f32_bits(st.grad_clip)
    elif version != 2:
        raise ValueError("unknown state version %d" % version)
    with open(path, "wb") as f:
        f.write(h.tobytes())
        f.write(inputs.tobytes())
        f.write(targets.tobytes())
        f.write(logits.tobytes())
        f.write(np.array([st.loss], dtype="<f4").tobytes())
        f.write(grads.tobytes())
        if version == 3:
            f.write(losses.tobytes())


def read_state(path, V=None, n_params=None):
    """Version 3 is self-describing.  Version 2 (llm.c) does not store V or num_params: pass them
    (e.g. from the model file's config)."""
    with open(path, "rb") as f:
        data = f.read()
    h = np.frombuffer(data[:4 * HEADER_INTS], dtype="<i4").astype(np.int64)
    if h[0] != STATE_MAGIC:
        raise ValueError("bad state magic %d" % h[0])
    version, B, T = int(h[1]), int(h[2]), int(h[3])
    kw = {}
    if version == 3:
        V, n_params, n_steps = int(h[4]), int(h[5]), int(h[6])
        kw = dict(n_steps=n_steps, lr=bits_f32(h[7]), beta1=bits_f32(h[8]), beta2=bits_f32(h[9]),
                  adam_eps=bits_f32(h[10]), weight_decay=bits_f32(h[11]), grad_clip=bits_f32(h[12]))
    elif version == 2:
        if V is None or n_params is None:
            raise ValueError("version 2 state needs V and n_params from the model")
        n_steps = 0
    else:
        raise ValueError("unknown state version %d" % version)
    off = 4 * HEADER_INTS

    def take(n, dt):
        nonlocal off
        a = np.frombuffer(data[off:off + 4 * n], dtype=dt)
        assert a.size == n, "state file truncated"
        off += 4 * n
        return a.copy()

    inputs = take(B * T, "<i4").reshape(B, T)
    targets = take(B * T, "<i4").reshape(B, T)
    logits = take(B * T * V, "<f4").reshape(B, T, V)
    loss = float(take(1, "<f4")[0])
    grads = take(n_params, "<f4")
    losses = take(n_steps, "<f4")
    if off != len(data):
        raise ValueError("state file has %d trailing bytes" % (len(data) - off))
    return DebugState(B=B, T=T, inputs=inputs, targets=targets, logits=logits, loss=loss, grads=grads,
                      version=version, V=V, losses=losses, **kw)


# ----------------------------------------------------------------------------------------------
# token shards


def write_shard(path, tokens):
    tokens = np.asarray(tokens)
    assert tokens.min() >= 0 and tokens.max() < 2 ** 16
    h = np.zeros(HEADER_INTS, dtype="<i4")
    h[0] = SHARD_MAGIC
    h[1] = 1
    h[2] = tokens.size
    with open(path, "wb") as f:
        f.write(h.tobytes())
        f.write(tokens.astype("<u2").tobytes())


def read_shard(path):
    with open(path, "rb") as f:
        data = f.read()
    h = np.frombuffer(data[:4 * HEADER_INTS], dtype="<i4")
    if h[0] != SHARD_MAGIC or h[1] != 1:
        raise ValueError("bad shard header %d %d" % (h[0], h[1]))
    n = int(h[2])
    toks = np.frombuffer(data[4 * HEADER_INTS:], dtype="<u2")
    if toks.size != n:
        raise ValueError("shard says %d tokens, holds %d" % (n, toks.size))
    return toks.astype(np.int64)
