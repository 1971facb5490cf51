"""Expected bytes for tests/formats.rs `known_bytes`, from the `gguf` python package's reference
quantizers (bit-exact with ggml's quantize_row_*_ref). Q8_1 is not in gguf.quants: it is
computed here the way ggml's reference does (Q8_0's d and qs, plus s = f16(d * sum(qs))).

Run with a python that has numpy and gguf: python gen_known_bytes.py
"""
import numpy as np
from gguf import quants
from gguf.constants import GGMLQuantizationType as T

# Block 0: an exact ramp with ties; block 1: ggml's synthetic data; block 2: zeros.
ramp = np.array([((i * 37) % 61 - 30) / 8.0 for i in range(32)], dtype=np.float32)
cosb = (0.1 + 2.0 * np.cos(np.arange(32, dtype=np.float32) + np.float32(0.5))).astype(np.float32)
x = np.concatenate([ramp, cosb, np.zeros(32, dtype=np.float32)]).astype(np.float32)


def q8_1(x):
    out = []
    for b in x.reshape(-1, 32):
        d = np.float32(np.abs(b).max() / np.float32(127))
        idv = np.float32(0) if d == 0 else np.float32(1) / d
        q = quants.np_roundf(b * idv).astype(np.int8)
        s = np.float32(np.int32(q.astype(np.int32).sum())) * d
        out += [np.float16(d).tobytes(), np.float16(s).tobytes(), q.tobytes()]
    return b"".join(out)


print("// cos block bits:", ", ".join("0x%08x" % v for v in x.view(np.uint32)[32:64]))
res = {
    "F32": x.tobytes(),
    "F16": x.astype(np.float16).tobytes(),
    "BF16": quants.quantize(x, T.BF16).tobytes(),
    "Q8_0": quants.quantize(x, T.Q8_0).tobytes(),
    "Q8_1": q8_1(x),
    "Q4_0": quants.quantize(x, T.Q4_0).tobytes(),
    "Q4_1": quants.quantize(x, T.Q4_1).tobytes(),
    "Q5_0": quants.quantize(x, T.Q5_0).tobytes(),
    "Q5_1": quants.quantize(x, T.Q5_1).tobytes(),
}
deq = {
    "Q8_1": np.concatenate([
        np.frombuffer(b[4:], dtype=np.int8).astype(np.float32) * np.frombuffer(b[:2], dtype=np.float16).astype(np.float32)
        for b in (res["Q8_1"][i:i + 36] for i in range(0, len(res["Q8_1"]), 36))
    ]),
}
for k, v in res.items():
    if k not in deq:
        deq[k] = quants.dequantize(np.frombuffer(v, dtype=np.uint8), getattr(T, k)).astype(np.float32)
# (type, quantized bytes, dequantized f32 bytes), hex.
for k, v in res.items():
    print('(GgmlType::%s, "%s", "%s"),' % (k, v.hex(), deq[k].tobytes().hex()))
