"""Readers/writers for the sinkscope binary formats (model file v3/v4, debug state v2/v3,
token shards), written from the specification in docs/ (model.md, variants.md,
formats.md) only.

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
# attention variants: header [17..28], in docs/formats.md's index order
ATTNS = ["softmax", "sigmoid", "elu1", "linear", "softpick", "clipped"]   # [17] row map
MASKS = ["causal", "prefix", "window"]                                      # [18] (+ [19] mask param)
ATTN_NORMS = ["none", "sum", "clamp"]                                       # [20] for sigmoid/elu1/linear
PHIS = ["none", "elu1", "mlp"]                                              # [21]
SLOTS = ["none", "kv", "logit", "zero"]                                     # [22]
VSTARS = ["learn", "zero", "fixed"]                                         # [23] (+ [24] vstar value)
GATES = ["none", "elementwise", "headwise"]                                 # [28]
# the defaults that unused fields hold ("a file is a pure function of its configuration")
DEFAULTS = dict(rope_base=10000.0, attn="softmax", mask="causal", mask_param=0, attn_norm="none", phi="none",
                slot="none", vstar="learn", vstar_value=0.0, value_bias=False, slot_shared=False,
                sink_token=False, gate="none", row_mass=1.0, sigmoid_bias=0.0, clip_zeta=1.0, clip_alpha=4.0,
                clip_len=0)


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
    # attention variants (docs/variants.md); header [17..32]
    attn: str = "softmax"        # row map
    mask: str = "causal"
    mask_param: int = 0          # prefix p / window w
    attn_norm: str = "none"      # normaliser of sigmoid/elu1/linear
    phi: str = "none"            # feature map on q and k (after RoPE)
    slot: str = "none"
    vstar: str = "learn"         # kv slot value: learned tensor / zero / every entry vstar_value
    vstar_value: float = 0.0
    value_bias: bool = False
    slot_shared: bool = False    # k*, v*, value bias: one vector for all heads
    sink_token: bool = False
    gate: str = "none"
    row_mass: float = 1.0        # softmax A
    sigmoid_bias: float = 0.0    # sigmoid b
    clip_zeta: float = 1.0
    clip_alpha: float = 4.0
    clip_len: int = 0            # [33] T of gamma (0 = the forward's T)
    Vp: int = 0  # 0 -> computed

    def __post_init__(self):
        if not self.Vp:
            self.Vp = padded_vocab(self.V)
        assert self.norm in NORMS and self.placement in PLACEMENTS
        assert self.ffn in FFNS and self.positions in POSITIONS
        assert self.attn in ATTNS and self.mask in MASKS and self.attn_norm in ATTN_NORMS
        assert self.phi in PHIS and self.slot in SLOTS and self.vstar in VSTARS and self.gate in GATES
        assert self.C % self.NH == 0
        self.tied = bool(self.tied)
        self.biases = bool(self.biases)
        self.value_bias = bool(self.value_bias)
        self.slot_shared = bool(self.slot_shared)
        self.sink_token = bool(self.sink_token)
        self.mask_param = int(self.mask_param)
        # float header fields are float32: keep exactly the value a file (and the fp32 engine) holds
        for k in ("rope_base", "norm_eps", "vstar_value", "row_mass", "sigmoid_bias", "clip_zeta", "clip_alpha"):
            setattr(self, k, f32(getattr(self, k)))
        # unsupported combination (the engine rejects it too): the kv slot's score with a feature map
        if self.slot == "kv" and self.phi != "none":
            raise ValueError("--slot kv cannot be combined with --phi (k* has no feature map)")
        if self.sink_token and self.maxT < 2:
            raise ValueError("--sink-token needs maxT >= 2")
        if self.mask_param < 0:
            raise ValueError("negative mask param")
        # fields a configuration does not use must hold their defaults
        for k in self.unused_fields():
            d = DEFAULTS[k]
            if getattr(self, k) != (f32(d) if isinstance(d, float) else d):
                raise ValueError("field %s=%r is unused by this configuration and must hold its default %r"
                                 % (k, getattr(self, k), d))

    def unused_fields(self):
        u = []
        if self.positions != "rope":
            u.append("rope_base")
        if self.mask == "causal":
            u.append("mask_param")
        if self.attn not in ("sigmoid", "elu1", "linear"):
            u.append("attn_norm")
        if self.slot != "kv":
            u.append("vstar")
        if not (self.slot == "kv" and self.vstar == "fixed"):
            u.append("vstar_value")
        if self.slot != "kv" and not self.value_bias:
            u.append("slot_shared")
        if self.attn != "softmax":
            u.append("row_mass")
        if self.attn != "sigmoid":
            u.append("sigmoid_bias")
        if self.attn != "clipped":
            u += ["clip_zeta", "clip_alpha", "clip_len"]
        return u

    @property
    def S(self):
        """rows of kstar/vstar/vbias: NH, or 1 with slot_shared"""
        return 1 if self.slot_shared else self.NH

    @property
    def has_slot(self):
        return self.slot != "none"

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
                and self.tied and self.biases and self.rope_base == f32(10000.0)
                and all(getattr(self, k) == (f32(d) if isinstance(d, float) else d) for k, d in DEFAULTS.items()))

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
    hs, NH = cfg.hs, cfg.NH
    if cfg.sink_token:
        s["sink_token"] = (C,)
    if cfg.slot == "kv":
        s["kstar"] = (L, cfg.S, hs)
        if cfg.vstar == "learn":
            s["vstar"] = (L, cfg.S, hs)
    if cfg.value_bias:
        s["vbias"] = (L, cfg.S, hs)
    if cfg.slot == "logit":
        s["sink_logit"] = (L, NH)
    if cfg.phi == "mlp":
        s["phi_w1"] = (L, hs, hs)
        s["phi_w2"] = (L, hs, hs)
    if cfg.gate != "none":
        s["gate_w"] = (L, C if cfg.gate == "elementwise" else NH, C)
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
        h[17] = ATTNS.index(cfg.attn)
        h[18] = MASKS.index(cfg.mask)
        h[19] = cfg.mask_param
        h[20] = ATTN_NORMS.index(cfg.attn_norm)
        h[21] = PHIS.index(cfg.phi)
        h[22] = SLOTS.index(cfg.slot)
        h[23] = VSTARS.index(cfg.vstar)
        h[24] = f32_bits(cfg.vstar_value)
        h[25] = int(cfg.value_bias)
        h[26] = int(cfg.slot_shared)
        h[27] = int(cfg.sink_token)
        h[28] = GATES.index(cfg.gate)
        h[29] = f32_bits(cfg.row_mass)
        h[30] = f32_bits(cfg.sigmoid_bias)
        h[31] = f32_bits(cfg.clip_zeta)
        h[32] = f32_bits(cfg.clip_alpha)
        h[33] = cfg.clip_len
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
                     norm_eps=1e-5, Vp=Vp)
    elif version == 4:
        def pick(names, i):
            if not 0 <= h[i] < len(names):
                raise ValueError("header field [%d] = %d out of range" % (i, h[i]))
            return names[int(h[i])]

        for i in (13, 14, 25, 26, 27):
            if h[i] not in (0, 1):
                raise ValueError("header field [%d] = %d is not a flag" % (i, h[i]))
        if np.any(h[34:]):
            raise ValueError("header fields [34..255] must be zero")
        cfg = Config(V=V, maxT=maxT, L=L, NH=NH, C=C, F=int(h[8]), norm=pick(NORMS, 9),
                     placement=pick(PLACEMENTS, 10), ffn=pick(FFNS, 11), positions=pick(POSITIONS, 12),
                     tied=bool(h[13]), biases=bool(h[14]), rope_base=bits_f32(h[15]),
                     norm_eps=bits_f32(h[16]), attn=pick(ATTNS, 17), mask=pick(MASKS, 18),
                     mask_param=int(h[19]), attn_norm=pick(ATTN_NORMS, 20), phi=pick(PHIS, 21),
                     slot=pick(SLOTS, 22), vstar=pick(VSTARS, 23), vstar_value=bits_f32(h[24]),
                     value_bias=bool(h[25]), slot_shared=bool(h[26]), sink_token=bool(h[27]),
                     gate=pick(GATES, 28), row_mass=bits_f32(h[29]), sigmoid_bias=bits_f32(h[30]),
                     clip_zeta=bits_f32(h[31]), clip_alpha=bits_f32(h[32]), clip_len=int(h[33]), Vp=Vp)
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
